"""Delta writes of the edited table and the deletion manifest, checked before anything is written."""
from __future__ import annotations

import json
import os

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType

from distunlearn.errors import DistunlearnError
from distunlearn.spark.source import col

MANIFEST_COLUMNS = ("run_id", "id", "rule", "score", "rank")


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
    """A manifest is appended to: an existing one must be a Delta table with the same id type."""
    from delta.tables import DeltaTable

    if not _holds_data(manifest):
        return
    if not DeltaTable.isDeltaTable(spark, manifest):
        raise DistunlearnError(f"--manifest {manifest} holds data that is not a Delta table")
    existing = spark.read.format("delta").load(manifest).schema
    if tuple(existing.fieldNames()) != MANIFEST_COLUMNS or existing["id"].dataType != id_type:
        raise DistunlearnError(f"--manifest {manifest} is a Delta table of another shape "
                               f"(expected columns {', '.join(MANIFEST_COLUMNS)} with id of type {id_type.simpleString()})")


def latest_version(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def write_edited(spark: SparkSession, source: DataFrame, deleted: DataFrame, id_col: str, path: str, run_id: str) -> int:
    """Source minus the deleted ids, every column and the schema kept, as a new Delta table."""
    deleted_ids = deleted.select(F.col("id").alias("__deleted_id"))
    edited = source.join(deleted_ids, col(id_col) == F.col("__deleted_id"), "left_anti").select(*map(col, source.columns))
    edited.write.format("delta").mode("errorifexists").option("userMetadata", commit_metadata(run_id)).save(path)
    return latest_version(spark, path)


def write_manifest(spark: SparkSession, deleted: DataFrame, run_id: str, rule: str, path: str) -> int:
    """One row per deleted row: run_id, id, rule, score, rank; no vector or payload column."""
    rows = deleted.select(F.lit(run_id).alias("run_id"), "id", F.lit(rule).alias("rule"), "score", "rank")
    rows.write.format("delta").mode("append").option("userMetadata", commit_metadata(run_id)).save(path)
    return latest_version(spark, path)
