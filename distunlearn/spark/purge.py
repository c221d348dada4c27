"""Physical erasure after a delete: REORG ... APPLY (PURGE) where deletion vectors are on, then VACUUM."""
from __future__ import annotations

import logging
import math

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from distunlearn.spark.delta_writer import commit_conf, commit_metadata
from distunlearn.spark.session import run_session
from distunlearn.spark.table import TableRef

log = logging.getLogger("distunlearn")
DELTA_SAFE_RETENTION_HOURS = 168
# From Delta 4.1 VACUUM ignores ``RETAIN N HOURS`` unless N is 0 (the table's delta.deletedFileRetentionDuration
# decides) while this internal setting is true, its default; set false for the VACUUM's own session only, the
# retention asked for applies on every Delta line (earlier releases do not know the setting).
RETAIN_IGNORED_CONF = "spark.databricks.delta.vacuum.retentionWindowIgnore.enabled"


def _metrics(spark: SparkSession, table: TableRef, operation: str, after_version: int, run_id: str) -> dict:
    """The metrics of the run's latest ``operation`` commit after ``after_version`` (bounded history)."""
    row = table.history(spark, after_version + 1).where(
        (F.col("operation") == operation) & (F.col("userMetadata") == commit_metadata(run_id))) \
        .orderBy(F.col("version").desc()).first()
    return {} if row is None else {"version": int(row["version"]), **{k: int(v) for k, v in
                                                                      (row["operationMetrics"] or {}).items()}}


def _vacuum_retention(spark: SparkSession, table: TableRef, after_version: int, run_id: str) -> dict:
    """The retention the VACUUM applied, as its VACUUM START commit records it: the RETAIN argument when
    Delta took it (``specifiedRetentionMillis``), else the table's ``delta.deletedFileRetentionDuration``."""
    row = table.history(spark, after_version + 1).where(
        (F.col("operation") == "VACUUM START") & (F.col("userMetadata") == commit_metadata(run_id))) \
        .orderBy(F.col("version").desc()).first()
    params = (row["operationParameters"] or {}) if row is not None else {}
    specified, default = params.get("specifiedRetentionMillis"), params.get("defaultRetentionMillis")
    if specified is not None:
        return {"retention_applied_hours": int(specified) / 3_600_000, "retention_applied_from": "RETAIN"}
    if default is not None:
        return {"retention_applied_hours": int(default) / 3_600_000,
                "retention_applied_from": "delta.deletedFileRetentionDuration"}
    return {"retention_applied_hours": None, "retention_applied_from": None}


def id_in_log_statistics(properties: dict, columns: list[str], id_col: str) -> bool:
    """Whether Delta writes per-file min/max values of the id column into the transaction log."""
    listed = properties.get("delta.dataSkippingStatsColumns")
    if listed is not None:
        return id_col in [c.strip().strip("`") for c in listed.split(",")]
    indexed = int(properties.get("delta.dataSkippingNumIndexedCols", 32))
    return indexed < 0 or id_col in columns[:indexed]


def purge(spark: SparkSession, table: TableRef, retention_hours: float, run_id: str, after_version: int,
          id_col: str) -> dict:
    """Rewrite files holding soft-deleted rows, then delete every file the table no longer needs that
    is older than ``retention_hours`` (data, deletion vectors, ``_change_data``). Returns what each did."""
    properties = table.require_delta(spark, "--in-place").get("properties") or {}
    result = {"retention_hours": retention_hours,
              "id_in_log_statistics": id_in_log_statistics(properties, table.read(spark).columns, id_col)}
    if result["id_in_log_statistics"]:
        log.warning("%s collects data-skipping statistics on %r: _delta_log keeps each file's min/max id, which "
                    "VACUUM never removes; exclude it with ALTER TABLE ... SET TBLPROPERTIES "
                    "('delta.dataSkippingStatsColumns' = '<other columns>')", table.text, id_col)
    if str(properties.get("delta.enableDeletionVectors", "false")).lower() == "true":
        with run_session(spark, commit_conf(run_id)) as session:
            session.sql(f"REORG TABLE {table.sql} APPLY (PURGE)").collect()
        result["reorg"] = _metrics(spark, table, "REORG", after_version, run_id)
    extra = {"spark.databricks.delta.vacuum.logging.enabled": "true", RETAIN_IGNORED_CONF: "false"}
    if retention_hours < DELTA_SAFE_RETENTION_HOURS:
        log.warning("lowering Delta's %d-hour retention safety check for this VACUUM only (retain %g hours): "
                    "readers of older versions of %s may fail", DELTA_SAFE_RETENTION_HOURS, retention_hours,
                    table.text)
        extra["spark.databricks.delta.retentionDurationCheck.enabled"] = "false"
    with run_session(spark, commit_conf(run_id, **extra)) as session:
        session.sql(f"VACUUM {table.sql} RETAIN {float(retention_hours)} HOURS").collect()
    result["vacuum"] = _metrics(spark, table, "VACUUM END", after_version, run_id)
    result.update(_vacuum_retention(spark, table, after_version, run_id))
    applied = result["retention_applied_hours"]
    if applied is not None and applied != math.floor(retention_hours + 0.5):   # RETAIN takes whole hours, half up
        log.warning("VACUUM of %s retained %g hours (%s), not the %g asked for", table.text,
                    result["retention_applied_hours"], result["retention_applied_from"], retention_hours)
    result["safety_check_lowered"] = retention_hours < DELTA_SAFE_RETENTION_HOURS
    return result
