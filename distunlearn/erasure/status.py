"""The erasure status table: one row per (request subject, table), brought up to date by each run.

A subject is *pending* in a table while its current version holds a row of it, *removed* once it holds
none (``erasable_from``: when the files that held them may leave storage, the removal plus the table's
retention), *erased* once a VACUUM of a later run could delete every such file and the files the
removing run's commits removed are gone from storage, and *overdue* when not erased by ``due_by``.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType

from distunlearn.erasure.config import ErasedTable, ErasureConfig
from distunlearn.spark.checkpoints import freeze
from distunlearn.spark.delta_writer import commit_metadata
from distunlearn.spark.ledger import Ledger
from distunlearn.spark.table import table_files

STATUSES = ("overdue", "pending", "removed", "erased")   # worst first
_TIMES = ("received_at", "due_by", "removed_at", "tombstoned_at", "erasable_from", "erased_at", "updated_at")
SCHEMA = StructType([
    StructField("subject", StringType()), StructField("request_id", StringType()), StructField("table", StringType()),
    StructField("location", StringType()), StructField("received_at", TimestampType()),
    StructField("due_by", TimestampType()), StructField("removed_at", TimestampType()),
    StructField("removed_version", LongType()), StructField("removed_by_run", StringType()),
    StructField("tombstoned_at", TimestampType()), StructField("erasable_from", TimestampType()),
    StructField("erased_at", TimestampType()), StructField("erased_by_run", StringType()),
    StructField("status", StringType()), StructField("updated_at", TimestampType()),
    StructField("updated_by_run", StringType())])


@dataclass
class TableOutcome:
    """What a run found and did on one table: its ledger state (commits, removed files, purge), the
    version checked after it, the subjects that version still holds, and the subjects whose rows the run's
    commits deleted (None: not known, after a crash and a purge)."""

    table: ErasedTable
    state: dict
    version: int
    present: DataFrame
    present_count: int
    deleted: DataFrame | None

    @property
    def rows_deleted(self) -> int:
        return sum(c["rows_deleted"] or 0 for c in self.state["commits"])


def status_label(now: dt.datetime) -> Column:
    """A row's status at ``now``: erased, overdue (not erased by its due date), removed or pending."""
    return F.when(F.col("erased_at").isNotNull(), "erased").when(F.col("due_by") < F.lit(now), "overdue") \
        .when(F.col("removed_at").isNotNull(), "removed").otherwise("pending")


def read_status(spark: SparkSession, config: ErasureConfig) -> DataFrame:
    """The status table, or an empty one before the first run."""
    table = config.status_table
    return table.read(spark) if table.is_delta(spark) else spark.createDataFrame([], SCHEMA)


def update_status(spark: SparkSession, config: ErasureConfig, subjects: DataFrame, outcomes: list[TableOutcome],
                  run_id: str, now: dt.datetime) -> dict:
    """Recompute the rows of every current subject in every table, keep the rows of subjects no longer
    requested, and replace the table in one commit. Returns the count of (subject, table) rows by status."""
    old = read_status(spark, config)
    requested = subjects.select("subject", "request_id", "received_at",
                                (F.col("received_at") + F.expr(f"INTERVAL {int(config.due_days * 86400)} SECONDS"))
                                .alias("due_by"))
    parts = [_table_rows(spark, config, o, requested, old, run_id, now) for o in outcomes]
    current = parts[0]
    for part in parts[1:]:
        current = current.unionByName(part)
    kept = old.join(current.select("subject", "table"), ["subject", "table"], "left_anti")
    rows = kept.select(*SCHEMA.fieldNames()).unionByName(current.select(*SCHEMA.fieldNames()))
    rows = freeze(rows)   # read from the table it replaces: computed before the overwrite
    config.status_table.save(rows, "overwrite", userMetadata=commit_metadata(run_id))
    counts = {r["status"]: int(r["count"]) for r in rows.where(F.col("updated_by_run") == run_id)
              .groupBy("status").count().collect()}
    return {s: counts.get(s, 0) for s in STATUSES}


def _table_rows(spark: SparkSession, config: ErasureConfig, outcome: TableOutcome, requested: DataFrame,
                old: DataFrame, run_id: str, now: dt.datetime) -> DataFrame:
    t, state = outcome.table, outcome.state
    commits, purged = state["commits"], state["purge"]
    removed_at = _time(commits[-1]["committed_at"]) if commits else now
    removed_version = commits[-1]["version"] if commits else outcome.version
    tombstoned = _time(purged["tombstoned_at"])
    retention = dt.timedelta(hours=purged["table_retention_hours"] if purged["retention_hours"] is None
                             else purged["retention_hours"])
    applied = purged.get("retention_applied_hours")
    cutoff = _time(purged["vacuum_started_at"]) - dt.timedelta(
        hours=applied if applied is not None else retention.total_seconds() / 3600)
    earlier = old.where(F.col("table") == t.name).select(
        "subject", *[F.col(c).alias(f"old_{c}") for c in ("removed_at", "removed_version", "removed_by_run",
                                                          "tombstoned_at", "erased_at", "erased_by_run")])
    rows = requested.join(outcome.present.withColumn("present", F.lit(True)), "subject", "left") \
        .join(earlier, "subject", "left")
    present = F.coalesce("present", F.lit(False))
    if outcome.deleted is not None:
        rows = rows.join(outcome.deleted.withColumn("deleted", F.lit(True)), "subject", "left")
        deleted, kept_tombstone = F.coalesce("deleted", F.lit(False)), F.col("old_tombstoned_at")
    else:   # not known which subjects the run deleted: every earlier removal counts from this run's purge
        deleted, kept_tombstone = F.lit(False), F.greatest("old_tombstoned_at", F.lit(tombstoned))
    fresh = ~present & (deleted | F.col("old_removed_at").isNull())   # removed by this run, or first seen absent

    def pick(new: Column, kept: Column) -> Column:
        return F.when(present, F.lit(None)).when(fresh, new).otherwise(kept)

    rows = rows.select(
        "subject", "request_id", F.lit(t.name).alias("table"), F.lit(state["location"]).alias("location"),
        "received_at", "due_by",
        pick(F.when(deleted, F.lit(removed_at)).otherwise(F.lit(now)), F.col("old_removed_at")).alias("removed_at"),
        pick(F.when(deleted, F.lit(removed_version)).otherwise(F.lit(outcome.version)),
             F.col("old_removed_version")).cast("long").alias("removed_version"),
        pick(F.lit(run_id), F.col("old_removed_by_run")).alias("removed_by_run"),
        pick(F.lit(tombstoned), kept_tombstone).alias("tombstoned_at"),
        pick(F.lit(None).cast("timestamp"), F.col("old_erased_at")).alias("erased_at_kept"),
        pick(F.lit(None).cast("string"), F.col("old_erased_by_run")).alias("erased_by_run_kept"))
    waiting = {r["removed_by_run"] for r in old.where((F.col("table") == t.name) & F.col("erased_at").isNull()
                                                      & F.col("removed_by_run").isNotNull())
               .select("removed_by_run").distinct().collect()} | {run_id}
    left = files_left(spark, Ledger(spark, config.ledger_table), t.name, state["location"], sorted(waiting),
                      {run_id: state["removed_files"]})
    gone = [run for run, n in left.items() if n == 0]   # no record of its files: it waits for a run that has one
    erasable = F.col("tombstoned_at") < F.lit(cutoff)
    newly_erased = (F.col("erased_at_kept").isNull() & F.col("removed_at").isNotNull() & erasable
                    & F.col("removed_by_run").isin(*gone)) if gone else F.lit(False)
    return rows.select(
        "subject", "request_id", "table", "location", "received_at", "due_by", "removed_at", "removed_version",
        "removed_by_run", "tombstoned_at",
        (F.col("tombstoned_at") + F.expr(f"INTERVAL {int(retention.total_seconds())} SECONDS")).alias("erasable_from"),
        F.when(newly_erased, F.lit(now)).otherwise(F.col("erased_at_kept")).alias("erased_at"),
        F.when(newly_erased, F.lit(run_id)).otherwise(F.col("erased_by_run_kept")).alias("erased_by_run"),
        F.lit(now).alias("updated_at"), F.lit(run_id).alias("updated_by_run")) \
        .withColumn("status", status_label(now))


def files_left(spark: SparkSession, ledger: Ledger, table: str, location: str, runs: list[str],
               recorded: dict | None = None) -> dict[str, int | None]:
    """For each run, how many of the files its commits removed from ``table`` (``recorded[run]``, else its
    ledger row's) are still on storage; None when the run recorded no list. Storage is listed once, and only
    when a run has files to look for; a listing that fails raises."""
    stored, left = None, {}
    for run in runs:
        files = (recorded or {}).get(run)
        if files is None:
            files = (((ledger.report(run) or {}).get("tables") or {}).get(table) or {}).get("removed_files")
        if files and stored is None:
            stored = table_files(spark, location)
        left[run] = None if files is None else len(set(files) & stored) if files else 0
    return left


def _time(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc)
