"""Physical erasure after a delete: REORG ... APPLY (PURGE) where deletion vectors are on, then VACUUM."""
from __future__ import annotations

import datetime as dt
import logging
import math
import re
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from distunlearn.errors import ParameterError
from distunlearn.run_report import Purge
from distunlearn.spark.delta_writer import commit_conf, commit_metadata
from distunlearn.spark.session import run_session
from distunlearn.spark.table import TableRef

log = logging.getLogger("distunlearn")
DELTA_DEFAULT_RETENTION_HOURS = 168
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


_INTERVAL_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(week|day|hour|minute|second|millisecond)s?", re.IGNORECASE)
_UNIT_HOURS = {"week": 168.0, "day": 24.0, "hour": 1.0, "minute": 1 / 60, "second": 1 / 3600,
               "millisecond": 1 / 3_600_000}


def table_retention_hours(properties: dict) -> float:
    """The table's ``delta.deletedFileRetentionDuration`` in hours (Delta's default: 7 days), e.g.
    ``interval 30 days`` or ``interval 1 day 12 hours``."""
    text = properties.get("delta.deletedFileRetentionDuration")
    if not text:
        return float(DELTA_DEFAULT_RETENTION_HOURS)
    parts = _INTERVAL_PART.findall(str(text))
    if not parts:
        raise ValueError(f"cannot read delta.deletedFileRetentionDuration = {text!r}")
    return sum(float(n) * _UNIT_HOURS[unit.lower()] for n, unit in parts)


def check_retention(properties: dict, retention_hours: float | None, only_writer: bool, table: TableRef) -> float:
    """The table's retention in hours; one error line when ``retention_hours`` is below it without the
    ``only_writer`` opt-in (no other process writes the table or reads its older versions)."""
    table_hours = table_retention_hours(properties)
    if retention_hours is not None and retention_hours < table_hours and not only_writer:
        raise ParameterError(f"{{retention_hours={retention_hours:g}}} is below the {table_hours:g} hours {table.text} "
                             "keeps removed files: a VACUUM that short can delete files of other writers' "
                             "transactions and of versions readers still use. Give {only_writer=True} as well when "
                             "no other process writes the table or reads its older versions, or leave "
                             "{retention_hours} out", "retention_hours", "only_writer")
    return table_hours


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat()


def id_in_log_statistics(properties: dict, columns: list[str], id_col: str) -> bool:
    """Whether Delta writes per-file min/max values of the id column into the transaction log."""
    listed = properties.get("delta.dataSkippingStatsColumns")
    if listed is not None:
        return id_col in [c.strip().strip("`") for c in listed.split(",")]
    indexed = int(properties.get("delta.dataSkippingNumIndexedCols", 32))
    return indexed < 0 or id_col in columns[:indexed]


def purge(spark: SparkSession, table: TableRef, retention_hours: float | None, run_id: str, after_version: int,
          id_col: str, only_writer: bool = False) -> Purge:
    """Rewrite files holding soft-deleted rows, then VACUUM: delete every file the table no longer needs
    that left it longer ago than its own retention (``delta.deletedFileRetentionDuration``), or than
    ``retention_hours`` when given (data, deletion vectors, ``_change_data``). A retention below the
    table's lowers Delta's safety check for this VACUUM only, and only with ``only_writer`` (no other process
    writes or reads older versions of the table: ``check_retention``). Returns what each did."""
    properties = table.require_delta(spark, "{source}").get("properties") or {}
    table_hours = check_retention(properties, retention_hours, only_writer, table)
    result = {"retention_hours": retention_hours, "table_retention_hours": table_hours,
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
    lowered = retention_hours is not None and retention_hours < table_hours
    if lowered:
        log.warning("VACUUM of %s retains %g hours, less than the table's %g: Delta's retention safety check is "
                    "lowered for this VACUUM only; files of other writers' transactions in flight and of recent "
                    "versions that readers still use can go", table.text, retention_hours, table_hours)
        extra["spark.databricks.delta.retentionDurationCheck.enabled"] = "false"
    retain = "" if retention_hours is None else f" RETAIN {float(retention_hours)} HOURS"
    # every file the run's commits removed left the table by now: it may go once the retention has passed
    kept = table_hours if retention_hours is None else retention_hours
    result["tombstoned_at"] = _iso(time.time())
    result["erasable_from"] = _iso(time.time() + kept * 3600)
    result["vacuum_started_at"] = _iso(time.time())
    with run_session(spark, commit_conf(run_id, **extra)) as session:
        session.sql(f"VACUUM {table.sql}{retain}").collect()
    result["vacuum"] = _metrics(spark, table, "VACUUM END", after_version, run_id)
    result.update(_vacuum_retention(spark, table, after_version, run_id))
    applied, asked = result["retention_applied_hours"], table_hours if retention_hours is None else retention_hours
    if applied is not None and applied != math.floor(asked + 0.5) and applied != asked:   # RETAIN: whole hours
        log.warning("VACUUM of %s retained %g hours (%s), not the %g asked for", table.text,
                    result["retention_applied_hours"], result["retention_applied_from"], asked)
    return Purge(**result, safety_check_lowered=lowered)
