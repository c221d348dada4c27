"""The subjects of erasure requests and the keys they have in each table, as Spark DataFrames."""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from distunlearn.erasure.config import ErasedTable, ErasureConfig
from distunlearn.errors import DistunlearnError
from distunlearn.spark.checkpoints import freeze
from distunlearn.spark.keys import SHUFFLE_JOIN
from distunlearn.spark.source import check_key_types, col


def read_subjects(spark: SparkSession, config: ErasureConfig, hash_key: bytes, version: int) -> DataFrame:
    """One row per subject of the requests table at ``version``: ``key`` (raw, stays on the executors),
    ``subject`` (its HMAC), ``received_at`` (the earliest request's) and ``request_id``; computed once."""
    df = config.requests_table.read(spark, version=version)
    for name, what in ((config.subject_col, "subject_col"), (config.received_col, "received_col"),
                       (config.request_id_col, "request_id_col")):
        if name is not None and name not in df.columns:
            raise DistunlearnError(f"requests {config.requests_table.text} has no column {name!r} ({what}; "
                                   f"columns: {', '.join(df.columns)})")
    rows = df.where(col(config.subject_col).isNotNull()).select(
        col(config.subject_col).alias("key"), col(config.received_col).cast("timestamp").alias("received_at"),
        (col(config.request_id_col).cast("string") if config.request_id_col else F.lit(None).cast("string"))
        .alias("request_id"))
    undated = rows.where(F.col("received_at").isNull()).count()
    if undated:
        raise DistunlearnError(f"requests {config.requests_table.text}: {undated} request(s) have no "
                               f"{config.received_col!r}; every request needs the time it was received")
    grouped = rows.groupBy("key").agg(F.min("received_at").alias("received_at"),
                                      F.min("request_id").alias("request_id"))
    from distunlearn.udfs.hashing import id_hasher

    hashed = grouped.withColumn("subject", F.col("key").cast("string"))
    schema = StructType([*grouped.schema.fields, StructField("subject", StringType())])
    return freeze(hashed.mapInArrow(id_hasher(hash_key, "subject"), schema))


def check_tables(spark: SparkSession, config: ErasureConfig, requests_version: int) -> None:
    """Before any edit: every table is a Delta table with its key column (and the ``via`` table with the
    columns the join takes), and keys directly matched have the subject column's type."""
    subject = config.requests_table.read(spark, version=requests_version)
    if config.subject_col not in subject.columns:
        raise DistunlearnError(f"requests {config.requests_table.text} has no column {config.subject_col!r} "
                               f"(subject_col; columns: {', '.join(subject.columns)})")
    subject_type = subject.schema[config.subject_col].dataType
    for t in config.tables:
        t.table.require_delta(spark, f"tables.{t.name}")
        columns = t.table.read(spark).schema
        needed = [(t, t.key)] + ([(config.table(t.via), config.table(t.via).key), (config.table(t.via), t.via_column)]
                                 if t.via else [])
        for owner, name in needed:
            names = (columns if owner is t else owner.table.read(spark).schema).fieldNames()
            if name not in names:
                raise DistunlearnError(f"tables.{owner.name} {owner.table.text} has no column {name!r} "
                                       f"(columns: {', '.join(names)})")
        if t.via is None:
            check_key_types(columns[t.key].dataType, subject_type, t.key)


def subject_keys(spark: SparkSession, config: ErasureConfig, table: ErasedTable, subjects: DataFrame) -> DataFrame:
    """(subject, key): the values of ``table.key`` that hold each subject's rows, read now; through the
    ``via`` table's rows of the subject for a table keyed through another."""
    if table.via is None:
        return subjects.select("subject", "key")
    via = config.table(table.via)
    rows = via.table.read(spark)
    for name in (via.key, table.via_column):
        if name not in rows.columns:
            raise DistunlearnError(f"tables.{via.name} has no column {name!r} (columns: {', '.join(rows.columns)})")
    check_key_types(rows.schema[via.key].dataType, subjects.schema["key"].dataType, via.key)
    return rows.select(col(via.key).alias("__via"), col(table.via_column).alias("key")) \
        .join(subjects.select("subject", F.col("key").alias("__via")).hint(SHUFFLE_JOIN), "__via") \
        .select("subject", "key").where(F.col("key").isNotNull()).distinct()


def present_subjects(rows: DataFrame, table: ErasedTable, keys: DataFrame) -> DataFrame:
    """(subject): the subjects of ``keys`` that ``rows`` (a version of the table) still holds a row of."""
    if table.key not in rows.columns:
        raise DistunlearnError(f"tables.{table.name} has no column {table.key!r} (columns: {', '.join(rows.columns)})")
    check_key_types(rows.schema[table.key].dataType, keys.schema["key"].dataType, table.key)
    held = rows.select(col(table.key).alias("key")).hint(SHUFFLE_JOIN)
    return keys.join(held, "key", "left_semi").select("subject").distinct()
