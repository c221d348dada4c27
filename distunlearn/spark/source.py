"""Reading the source table at a pinned version and labelling its rows by domain."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, DoubleType, FloatType, IntegralType, NumericType, StringType

from distunlearn.errors import DistunlearnError, ParameterError, labelled
from distunlearn.run_report import RequestsRead
from distunlearn.spark.checkpoints import freeze
from distunlearn.spark.keys import DEFAULT_BROADCAST_LIMIT_MB, KeySet, key_row_bytes, variable_width
from distunlearn.spark.session import conf_bytes, cores
from distunlearn.spark.table import TableRef, first_line

log = logging.getLogger("distunlearn")
UNWANTED, RETAINED = 1, 2

# Input partitions are coalesced (never shuffled) to about this many per core when a source is split far
# finer than the cluster and its size need: every pass runs one task per partition, and a Python task
# costs PySpark a tenth of a second or more even when its partition is empty.
TASKS_PER_CORE = 4
PARTITION_BYTES = 128 * 1024 * 1024     # Spark's spark.sql.files.maxPartitionBytes
OPEN_COST_BYTES = 4 * 1024 * 1024       # and spark.sql.files.openCostInBytes


def col(name: str) -> Column:
    """A column by its exact name, even one with dots or spaces."""
    return F.col("`" + name.replace("`", "``") + "`")


@dataclass(frozen=True)
class Source:
    """The source rows: a table as read at ``version`` (Delta) or as found (Parquet), or a DataFrame
    (``table`` None)."""

    name: str
    format: str
    df: DataFrame
    version: int | None
    table: TableRef | None = None

    @classmethod
    def read(cls, spark: SparkSession, data: "str | TableRef | DataFrame", fmt: str = "delta",
             label: str = "{source}", pin: bool = True) -> "Source":
        """A table read at its latest version, or a DataFrame computed once and kept (``pin``): every pass
        of the run, and its write, see the same rows. ``label`` names the input in errors (``errors.labelled``)."""
        if isinstance(data, DataFrame):
            return cls("<DataFrame>", "dataframe", freeze(data) if pin else data, None)
        table = data if isinstance(data, TableRef) else TableRef.parse(data)
        if fmt == "parquet":
            if table.is_name:
                raise ParameterError(f"{{format=parquet}} reads a path; {table.text} is a catalog name", "format")
            if not table.holds_data(spark):
                raise labelled(f"{label} not found: {table.text}", label)
            try:
                return cls(table.location, fmt, table.read(spark, "parquet"), None, table)
            except Exception as exc:  # noqa: BLE001 - reported as one line
                raise labelled(f"cannot read Parquet {label} {table.text}: {first_line(exc)}", label) from None
        detail = table.require_delta(spark, label)
        version = table.latest_version(spark)
        return cls(table.location, fmt, coalesced(table.read(spark, version=version), detail), version, table)


def partition_target(cores: int, size_bytes: int | None) -> int:
    """How many partitions a scan needs: ``TASKS_PER_CORE`` per core, and one per ``PARTITION_BYTES`` of
    files so that a large table keeps the split size Spark would give it (unknown size: no limit)."""
    if size_bytes is None:
        return 2**31 - 1
    return max(TASKS_PER_CORE * max(cores, 1), math.ceil(size_bytes / PARTITION_BYTES))


def scan_partitions(files: int, size_bytes: int, cores: int, max_partition_bytes: int = PARTITION_BYTES,
                    open_cost_bytes: int = OPEN_COST_BYTES) -> int:
    """About how many partitions Spark splits ``files`` files of ``size_bytes`` in all into (its file-source
    rule: each file counts ``open_cost_bytes`` more, splits hold up to ``max_partition_bytes`` but are made
    smaller to give every core one), from the table's metadata alone."""
    padded = size_bytes + files * open_cost_bytes
    per_core = padded / max(cores, 1)
    split = min(max_partition_bytes, max(open_cost_bytes, per_core))
    return max(1, math.ceil(padded / max(split, 1)))


def coalesced(df: DataFrame, detail: dict | None) -> DataFrame:
    """``df``, a Delta table's scan, with its partitions coalesced to ``partition_target`` when Spark will
    split it into more than twice as many (``scan_partitions`` of ``DESCRIBE DETAIL``'s file count and
    size, under the session's file-split settings).

    Coalescing merges neighbouring partitions in the same task without a shuffle: the rows, and so every
    statistic, score and deletion set, are the same; only the number of tasks (and of files the edited
    table is written in) drops. A source of a thousand mostly empty partitions then costs a few tasks
    per pass instead of a thousand. A DataFrame or Parquet source is read as it is split.
    """
    files, size = (detail or {}).get("numFiles"), (detail or {}).get("sizeInBytes")
    if files is None or size is None:
        return df
    spark = df.sparkSession
    slots = cores(spark)
    max_bytes = conf_bytes(spark, "spark.sql.files.maxPartitionBytes")
    open_cost = conf_bytes(spark, "spark.sql.files.openCostInBytes")
    partitions = scan_partitions(int(files), int(size), slots, PARTITION_BYTES if max_bytes is None else max_bytes,
                                 OPEN_COST_BYTES if open_cost is None else open_cost)
    target = partition_target(slots, int(size))
    return df.coalesce(target) if partitions > 2 * target else df


def vector_as_array(df: DataFrame, vector_col: str) -> Column:
    """The vector column as array<float|double>; ML vectors are converted."""
    if vector_col not in df.columns:
        raise DistunlearnError(f"vector column {vector_col!r} not in the source (columns: {', '.join(df.columns)})")
    dtype = df.schema[vector_col].dataType
    if isinstance(dtype, ArrayType) and isinstance(dtype.elementType, (FloatType, DoubleType)):
        return col(vector_col)
    if type(dtype).__name__ == "VectorUDT":
        from pyspark.ml.functions import vector_to_array

        return vector_to_array(col(vector_col), "float64")
    raise DistunlearnError(f"vector column {vector_col!r} has type {dtype.simpleString()}; "
                           "expected array<float>, array<double> or an ML vector")


def predicate(df: DataFrame, sql: str, label: str) -> Column:
    """A SQL boolean expression over the source, checked now so that a typo fails before any work; errors
    name ``label`` (``"{unwanted}"``)."""
    try:
        expr = F.expr(sql)
        dtype = df.select(expr.alias("p")).schema["p"].dataType
    except Exception as exc:  # noqa: BLE001 - parse and analysis errors, reported as one line
        raise labelled(f"{label} is not a valid SQL predicate on the source: {first_line(exc)}", label) from None
    if dtype.simpleString() != "boolean":
        raise labelled(f"{label} must be a boolean SQL expression, got type {dtype.simpleString()}", label)
    return F.coalesce(expr, F.lit(False))


@dataclass(frozen=True)
class Requests:
    """Deletion requests: their distinct non-null keys (column ``__request_key``, hinted for the join),
    how many there are and their size, the null keys left out, and the requests table's version."""

    keys: DataFrame
    size: KeySet
    null_keys: int
    version: int | None

    def record(self) -> RequestsRead:
        return RequestsRead(self.size.rows, self.null_keys, self.version)


def read_requests(spark: SparkSession, data: "str | TableRef | DataFrame", key: str,
                  broadcast_limit_mb: float = DEFAULT_BROADCAST_LIMIT_MB, version: int | None = None) -> Requests:
    """The distinct non-null keys of a deletion-requests Delta table (at ``version``, default its latest)
    or DataFrame. One aggregate measures them first: the keys are hinted to be broadcast when they fit in
    ``broadcast_limit_mb``; null keys are counted (and reported), and a table with no non-null key stops
    the run."""
    if version is None:
        source = Source.read(spark, data, "delta", label="{requests}", pin=False)
        table, version = source.df, source.version
    else:
        table = (data if isinstance(data, TableRef) else TableRef.parse(data)).read(spark, version=version)
    if key not in table.columns:
        raise ParameterError(f"{{requests}} has no column {key!r} (columns: {', '.join(table.columns)})", "requests")
    keys = table.select(col(key).alias("__request_key"))
    dtype = keys.schema["__request_key"].dataType
    width = F.max(F.octet_length("__request_key")) if variable_width(dtype) else F.lit(None)
    distinct = keys.where(F.col("__request_key").isNotNull()).distinct()
    counts = keys.agg(F.count(F.lit(1)).alias("rows"), F.count("__request_key").alias("non_null")).first()
    size = distinct.agg(F.count(F.lit(1)).alias("rows"), width.alias("width")).first()
    null_keys = int(counts["rows"] - counts["non_null"])
    if size["rows"] == 0:
        raise ParameterError(f"{{requests}} has no usable key in column {key!r}: {counts['rows']:,} row(s), "
                             f"{null_keys:,} of them null", "requests")
    if null_keys:
        log.warning("requests: %d row(s) with a null %r were left out (%d key(s) used)", null_keys, key,
                    size["rows"])
    keyset = KeySet(size["rows"], key_row_bytes(dtype, size["width"] or 0))
    return Requests(keyset.hinted(distinct, broadcast_limit_mb), keyset, null_keys, version)


def check_key_types(source_type: DataType, request_type: DataType, key: str) -> None:
    """Request keys match the source's key column by value: the same type, or two integer types (compared
    as the wider one). Nothing else is cast: no trimming, no parsing of strings into numbers."""
    if source_type == request_type or (isinstance(source_type, IntegralType) and isinstance(request_type, IntegralType)):
        return
    raise ParameterError(f"{{requests}} keys have type {request_type.simpleString()} but the source's key column "
                         f"{key!r} has type {source_type.simpleString()}: give keys of type "
                         f"{source_type.simpleString()} (integer types match each other; nothing else is cast)",
                         "requests")


def labelled_rows(source: Source, id_col: str, vector_col: str, unwanted: str, retained: str | None,
                  requests: DataFrame | None = None, request_key: str | None = None,
                  label_col: str | None = None) -> DataFrame:
    """Columns (id, domain, vec, requested[, label]): domain 1 unwanted, 2 retained, null for rows in
    neither; ``requested`` when the row's ``request_key`` (default the id) is in ``requests``;
    ``label`` is ``label_col`` as a double, or a string (the class a downstream classifier learns).

    A row matching both predicates is unwanted.
    """
    df = source.df
    key = request_key or id_col
    for name, what, param in ((id_col, "id column", "id_col"), (key, "request key column", "request_key")):
        if name not in df.columns:
            raise ParameterError(f"{what} {name!r} ({{{param}}}) not in the source (columns: {', '.join(df.columns)})",
                                 param)
    vec = vector_as_array(df, vector_col)
    is_unwanted = predicate(df, unwanted, "{unwanted}")
    is_retained = predicate(df, retained, "{retained}") if retained else ~is_unwanted
    domain = F.when(is_unwanted, F.lit(UNWANTED)).when(is_retained, F.lit(RETAINED))
    requested = F.lit(False)
    if requests is not None:
        check_key_types(df.schema[key].dataType, requests.schema["__request_key"].dataType, key)
        df = df.join(requests, col(key) == F.col("__request_key"), "left")
        requested = F.col("__request_key").isNotNull()
    label = []
    if label_col:
        dtype = df.schema[label_col].dataType if label_col in df.columns else None
        if not isinstance(dtype, (NumericType, StringType)):
            raise DistunlearnError(f"label column {label_col!r} must be a numeric (class indices 0, 1, ...) or "
                                   f"string column of the source")
        label = [(col(label_col) if isinstance(dtype, StringType) else col(label_col).cast("double")).alias("label")]
    return df.select(col(id_col).alias("id"), domain.cast("int").alias("domain"), vec.alias("vec"),
                     requested.alias("requested"), *label)
