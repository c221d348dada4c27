"""Delta writes of the edited table and the deletion manifest, checked before anything is written.

Writes carry their settings as writer options (``userMetadata``); Delta commands that take settings only
from the session (MERGE) run in a session of their own (``run_session``). Nothing is set on the caller's
session.
"""
from __future__ import annotations

import json
import logging
import os

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, StringType, StructField, StructType

from distunlearn.errors import ParameterError
from distunlearn.spark.session import run_session_reading
from distunlearn.spark.keys import KeySet
from distunlearn.spark.source import col
from distunlearn.spark.table import TableRef

log = logging.getLogger("distunlearn")
MANIFEST_COLUMNS = ("run_id", "id", "reason", "rule", "score", "rank")
CREATE_OPERATIONS = ("WRITE", "CREATE TABLE AS SELECT", "CREATE TABLE")
# A broadcast join collects its smaller side on the driver: the run's own session broadcasts nothing by
# itself; only a key set measured beforehand is broadcast, by an explicit hint (``keys.KeySet``).
NO_BROADCAST_JOINS = {"spark.sql.autoBroadcastJoinThreshold": "-1",
                      "spark.sql.adaptive.autoBroadcastJoinThreshold": "-1"}


def commit_metadata(run_id: str) -> str:
    """Delta ``userMetadata`` of every commit the job makes: the run id, never a row id."""
    return json.dumps({"distunlearn_run_id": run_id})


def commit_conf(run_id: str, txn_version: int | None = None, **extra) -> dict:
    """Session settings of a Delta command that takes no writer options (MERGE, REORG, VACUUM): the run id
    as ``userMetadata`` and, with ``txn_version``, Delta's idempotent-write transaction id."""
    conf = {"spark.databricks.delta.commitInfo.userMetadata": commit_metadata(run_id), **NO_BROADCAST_JOINS,
            **extra}
    if txn_version is not None:
        conf.update({"spark.databricks.delta.write.txnAppId": f"distunlearn-{run_id}",
                     "spark.databricks.delta.write.txnVersion": str(txn_version)})
    return conf


def check_targets(spark: SparkSession, source: TableRef | None, output: TableRef | None,
                  manifest: TableRef | None, report: str | None, ledger: TableRef | None = None) -> None:
    """Before any work: the edited table goes to a new, empty location; no two targets collide; every
    table written by name has its database; the report's folder exists."""
    for table, label in ((output, "{output}"), (manifest, "{manifest}"), (ledger, "{ledger}")):
        if table is not None:
            table.check_writable(spark, label)
    if output and source and output.same_as(source, spark):
        raise ParameterError("{output} is the source table; write the edited table to another path", "output")
    if output and output.holds_data(spark):
        raise ParameterError(f"{{output}} {output.text} already holds data; choose a new path or table name", "output")
    if manifest and ((source and manifest.same_as(source, spark)) or (output and manifest.same_as(output, spark))):
        raise ParameterError("{manifest} must be a table of its own, not the source or the output table", "manifest")
    if report and not os.path.isdir(os.path.dirname(os.path.abspath(report))):
        raise ParameterError(f"{{report}} {report}: folder {os.path.dirname(report) or '.'} does not exist", "report")


def warn_if_unsafe_s3_writes(spark: SparkSession, *tables: TableRef | None) -> bool:
    """Delta on S3 without a DynamoDB log store is safe for one writing cluster at a time: say so when the
    run writes to ``s3a://`` or ``s3://`` without one. Returns whether it warned."""
    on_s3 = [t for t in tables if t is not None and t.location.lower().startswith(("s3a://", "s3://"))]
    if not on_s3:
        return False
    store = " ".join(str(spark.conf.get(f"spark.delta.logStore.{scheme}.impl", "") or "") for scheme in ("s3a", "s3"))
    if "DynamoDB" in store:
        return False
    log.warning("writing Delta tables on S3 (%s) without a DynamoDB log store: safe only while no other cluster "
                "writes to them; see docs/operations.md 'Object stores'", ", ".join(t.text for t in on_s3))
    return True


def check_manifest(spark: SparkSession, manifest: TableRef, id_type: DataType) -> None:
    """A manifest is shared by runs: an existing one must be a Delta table with the same id type."""
    if not manifest.holds_data(spark):
        return
    if not manifest.is_delta(spark):
        raise ParameterError(f"{{manifest}} {manifest.text} holds data that is not a Delta table", "manifest")
    existing = manifest.read(spark).schema
    if tuple(existing.fieldNames()) != MANIFEST_COLUMNS or existing["id"].dataType != id_type:
        raise ParameterError(f"{{manifest}} {manifest.text} is a Delta table of another shape (expected columns "
                             f"{', '.join(MANIFEST_COLUMNS)} with id of type {id_type.simpleString()})", "manifest")


def committed_version(spark: SparkSession, table: TableRef, run_id: str, operations=("WRITE", "MERGE"),
                      since: int = 0) -> int | None:
    """Version of this run's first data commit to ``table`` from version ``since`` on (found by its
    ``userMetadata``), or None; None too when no Delta table is there."""
    try:
        first = table.history(spark, since).where((F.col("userMetadata") == commit_metadata(run_id))
                                                  & F.col("operation").isin(*operations)) \
            .orderBy("version").select("version").first()
    except Exception:  # noqa: BLE001 - no Delta table there (or unreadable: the checks that follow say why)
        return None
    return None if first is None else int(first["version"])


def write_edited(spark: SparkSession, source: DataFrame, deleted: DataFrame, keys: KeySet, id_col: str,
                 output: TableRef, run_id: str, broadcast_limit_mb: float) -> int:
    """Source minus the deleted ids (``keys`` of them: broadcast when under the limit), every column and the
    schema kept, as a new Delta table."""
    deleted_ids = keys.hinted(deleted.select(F.col("id").alias("__deleted_id")), broadcast_limit_mb)
    edited = source.join(deleted_ids, col(id_col) == F.col("__deleted_id"), "left_anti").select(*map(col, source.columns))
    output.save(edited, "error", userMetadata=commit_metadata(run_id))
    return committed_version(spark, output, run_id, CREATE_OPERATIONS)


def manifest_rows(selected: DataFrame, requested: DataFrame, run_id: str, rule: str,
                  hash_key: bytes | None = None, reason: str = "distributional") -> DataFrame:
    """One row per deleted row: run_id, id (or its HMAC), reason (the objective that selected it, or
    ``request``), rule, score, rank; no payload."""
    rows = selected.select(F.lit(run_id).alias("run_id"), "id", F.lit(reason).alias("reason"),
                           F.lit(rule).alias("rule"), "score", "rank")
    rows = rows.unionByName(requested.select(
        F.lit(run_id).alias("run_id"), "id", F.lit("request").alias("reason"), F.lit(None).cast("string").alias("rule"),
        F.lit(None).cast("double").alias("score"), F.lit(None).cast("long").alias("rank")))
    if hash_key is not None:
        from distunlearn.udfs.hashing import id_hasher

        schema = StructType([StructField(f.name, StringType() if f.name == "id" else f.dataType) for f in rows.schema])
        rows = rows.mapInArrow(id_hasher(hash_key), schema)
    return rows


def replace_run_rows(table: TableRef, rows: DataFrame, run_id: str) -> None:
    """Replace this run's rows of a shared table (manifest, ledger) in one atomic commit."""
    table.save(rows, "overwrite", replaceWhere=f"run_id = {sql_string(run_id)}", userMetadata=commit_metadata(run_id))


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def merge_delete(spark: SparkSession, target: TableRef, keys_df: DataFrame, keys: KeySet, column: str,
                 run_id: str, broadcast_limit_mb: float, txn_version: int) -> None:
    """Delete the rows whose ``column`` is in ``keys_df`` (one column ``key``) by a MERGE join (the keys
    never enter a predicate or the log), as one atomic commit on the table's current version carrying the
    run id; Delta's idempotent-write transaction (``distunlearn-<run id>``, ``txn_version``) makes a repeat
    of the same commit a no-op.

    The keys reach the MERGE's own session as a global temporary view, dropped afterwards; when ``keys``
    fit in the limit they carry a broadcast hint, which Delta's join keeps, so the table is not shuffled."""
    deleted = keys.hinted(keys_df.select(F.col("key").alias("__deleted_key")), broadcast_limit_mb)
    quoted = "`" + column.replace("`", "``") + "`"
    with run_session_reading(deleted, commit_conf(run_id, txn_version=txn_version),
                             "distunlearn_deleted") as (session, view):
        session.sql(f"MERGE INTO {target.sql} AS t USING {view} AS d "
                    f"ON t.{quoted} = d.__deleted_key WHEN MATCHED THEN DELETE").collect()
