"""Delta writes of the edited table and the deletion manifest, checked before anything is written."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, StringType, StructField, StructType

from distunlearn.errors import DistunlearnError
from distunlearn.spark.session import session_conf
from distunlearn.spark.source import col

MANIFEST_COLUMNS = ("run_id", "id", "reason", "rule", "score", "rank")


def commit_metadata(run_id: str) -> str:
    """Delta ``userMetadata`` of every commit the job makes: the run id, never a row id."""
    return json.dumps({"distunlearn_run_id": run_id})


def _local(path: str) -> str | None:
    return None if "://" in path else os.path.abspath(path)


def _holds_data(path: str) -> bool:
    local = _local(path)
    return local is not None and os.path.isdir(local) and bool(os.listdir(local))


def _same(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/") or (_local(a) is not None and _local(a) == _local(b))


def check_targets(source: str, output: str | None, manifest: str | None, report: str | None) -> None:
    """Before any work: the edited table goes to a new, empty location; no two targets collide;
    the report's folder exists."""
    if output and _same(output, source):
        raise DistunlearnError("--output is the source table; write the edited table to another path")
    if output and _holds_data(output):
        raise DistunlearnError(f"--output {output} already holds data; choose a new path")
    if manifest and (_same(manifest, source) or (output and _same(manifest, output))):
        raise DistunlearnError("--manifest must be a path of its own, not the source or the output table")
    if report and not os.path.isdir(os.path.dirname(os.path.abspath(report))):
        raise DistunlearnError(f"--report {report}: folder {os.path.dirname(report) or '.'} does not exist")


def check_manifest(spark: SparkSession, manifest: str, id_type: DataType) -> None:
    """A manifest is shared by runs: an existing one must be a Delta table with the same id type."""
    from delta.tables import DeltaTable

    if not _holds_data(manifest):
        return
    if not DeltaTable.isDeltaTable(spark, manifest):
        raise DistunlearnError(f"--manifest {manifest} holds data that is not a Delta table")
    existing = spark.read.format("delta").load(manifest).schema
    if tuple(existing.fieldNames()) != MANIFEST_COLUMNS or existing["id"].dataType != id_type:
        raise DistunlearnError(f"--manifest {manifest} is a Delta table of another shape "
                               f"(expected columns {', '.join(MANIFEST_COLUMNS)} with id of type {id_type.simpleString()})")


@contextmanager
def commit_context(spark: SparkSession, run_id: str, txn_version: int | None = None, **extra_conf):
    """Session settings around Delta commands that take no writer options (MERGE, REORG, VACUUM):
    the run id as ``userMetadata`` and, with ``txn_version``, Delta's idempotent-write transaction id."""
    conf = {"spark.databricks.delta.commitInfo.userMetadata": commit_metadata(run_id), **extra_conf}
    if txn_version is not None:
        conf.update({"spark.databricks.delta.write.txnAppId": f"distunlearn-{run_id}",
                     "spark.databricks.delta.write.txnVersion": str(txn_version)})
    with session_conf(spark, conf):
        yield


def committed_version(spark: SparkSession, path: str, run_id: str, operations=("WRITE", "MERGE")) -> int | None:
    """Version of this run's data commit to ``path`` (found by its ``userMetadata``), or None."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return None
    history = DeltaTable.forPath(spark, path).history()
    hit = history.where((F.col("userMetadata") == commit_metadata(run_id)) & F.col("operation").isin(*operations)) \
        .agg(F.max("version")).first()[0]
    return None if hit is None else int(hit)


def latest_version(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def write_edited(spark: SparkSession, source: DataFrame, deleted: DataFrame, id_col: str, path: str, run_id: str) -> int:
    """Source minus the deleted ids, every column and the schema kept, as a new Delta table."""
    deleted_ids = deleted.select(F.col("id").alias("__deleted_id"))
    edited = source.join(deleted_ids, col(id_col) == F.col("__deleted_id"), "left_anti").select(*map(col, source.columns))
    edited.write.format("delta").mode("errorifexists").option("userMetadata", commit_metadata(run_id)).save(path)
    return latest_version(spark, path)


def manifest_rows(selected: DataFrame, requested: DataFrame, run_id: str, rule: str,
                  hash_key: bytes | None = None) -> DataFrame:
    """One row per deleted row: run_id, id (or its HMAC), reason, rule, score, rank; no payload."""
    rows = selected.select(F.lit(run_id).alias("run_id"), "id", F.lit("distributional").alias("reason"),
                           F.lit(rule).alias("rule"), "score", "rank")
    rows = rows.unionByName(requested.select(
        F.lit(run_id).alias("run_id"), "id", F.lit("request").alias("reason"), F.lit(None).cast("string").alias("rule"),
        F.lit(None).cast("double").alias("score"), F.lit(None).cast("long").alias("rank")))
    if hash_key is not None:
        from distunlearn.udfs.hashing import id_hasher

        schema = StructType([StructField(f.name, StringType() if f.name == "id" else f.dataType) for f in rows.schema])
        rows = rows.mapInArrow(id_hasher(hash_key), schema)
    return rows


def write_manifest(spark: SparkSession, rows: DataFrame, run_id: str, path: str) -> int:
    """Replace this run's rows of the manifest atomically (a retried or resumed run rewrites them)."""
    rows.write.format("delta").mode("overwrite").option("replaceWhere", f"run_id = {sql_string(run_id)}") \
        .option("userMetadata", commit_metadata(run_id)).save(path)
    return latest_version(spark, path)


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def merge_delete(spark: SparkSession, path: str, deleted_ids: DataFrame, id_col: str, run_id: str) -> int:
    """Delete the rows whose id is in ``deleted_ids`` by a MERGE join (the ids never enter a predicate
    or the log), as one atomic commit carrying the run id; a repeat with the same run id is a no-op."""
    from delta.tables import DeltaTable

    target = DeltaTable.forPath(spark, path).alias("t")
    with commit_context(spark, run_id, txn_version=1):
        target.merge(deleted_ids.select(F.col("id").alias("__deleted_id")).alias("d"),
                     F.col("t.`" + id_col.replace("`", "``") + "`") == F.col("d.__deleted_id")) \
            .whenMatchedDelete().execute()
    return committed_version(spark, path, run_id, ("MERGE",))
