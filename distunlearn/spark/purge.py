"""Physical erasure after a delete: REORG ... APPLY (PURGE) where deletion vectors are on, then VACUUM."""
from __future__ import annotations

import logging

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from distunlearn.spark.delta_writer import commit_context

log = logging.getLogger("distunlearn")
DELTA_SAFE_RETENTION_HOURS = 168


def _quoted(path: str) -> str:
    return "delta.`" + path.replace("`", "``") + "`"


def _metrics(spark: SparkSession, path: str, operation: str, after_version: int) -> dict:
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).history().where(
        (F.col("operation") == operation) & (F.col("version") > after_version)).orderBy(F.col("version").desc()).first()
    return {} if row is None else {"version": int(row["version"]), **{k: int(v) for k, v in
                                                                      (row["operationMetrics"] or {}).items()}}


def purge(spark: SparkSession, path: str, retention_hours: float, run_id: str, after_version: int) -> dict:
    """Rewrite files holding soft-deleted rows, then delete every file the table no longer needs that
    is older than ``retention_hours`` (data, deletion vectors, ``_change_data``). Returns what each did."""
    from delta.tables import DeltaTable

    properties = DeltaTable.forPath(spark, path).detail().select("properties").first()[0] or {}
    result = {"retention_hours": retention_hours}
    if str(properties.get("delta.enableDeletionVectors", "false")).lower() == "true":
        with commit_context(spark, run_id):
            spark.sql(f"REORG TABLE {_quoted(path)} APPLY (PURGE)")
        result["reorg"] = _metrics(spark, path, "REORG", after_version)
    extra = {"spark.databricks.delta.vacuum.logging.enabled": "true"}
    if retention_hours < DELTA_SAFE_RETENTION_HOURS:
        log.warning("lowering Delta's %d-hour retention safety check for this VACUUM only (retain %g hours): "
                    "readers of older versions of %s may fail", DELTA_SAFE_RETENTION_HOURS, retention_hours, path)
        extra["spark.databricks.delta.retentionDurationCheck.enabled"] = "false"
    with commit_context(spark, run_id, **extra):
        spark.sql(f"VACUUM {_quoted(path)} RETAIN {float(retention_hours)} HOURS")
    result["vacuum"] = _metrics(spark, path, "VACUUM END", after_version)
    result["safety_check_lowered"] = retention_hours < DELTA_SAFE_RETENTION_HOURS
    return result
