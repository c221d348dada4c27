"""The in-place edit of a table that other writers keep changing.

The run deletes by MERGE on whatever version is current when the MERGE starts: its planned rows by id and,
when requests match on the id column, every row of a requested key (rows appended since the plan too);
requests on another column get a second MERGE by that key. Delta's own conflict check decides what
conflicts: on Delta's Serializable tables that is any commit, appends included, that lands while the MERGE
runs. A MERGE that conflicted committed nothing and is tried again after a pause; nothing is ever undone,
so no other writer's commit can be lost.

The manifest then lists what the commits deleted, computed from the rows staged in it before them and the
versions the commits read: exact whatever others committed meanwhile, and computed the same way by a rerun
after a crash.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from urllib.parse import unquote

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from distunlearn.errors import ConflictError, DistunlearnError
from distunlearn.run_report import RunCommit
from distunlearn.spark.checkpoints import freeze
from distunlearn.spark.delta_errors import conflict_line, conflicting_commit, is_conflict, root_cause
from distunlearn.spark.delta_writer import commit_metadata, merge_delete, replace_run_rows
from distunlearn.spark.keys import SHUFFLE_JOIN, KeySet
from distunlearn.spark.source import col
from distunlearn.spark.table import TableRef

log = logging.getLogger("distunlearn")
MAX_PAUSE_SECONDS = 30.0


@dataclass(frozen=True)
class LiveEdit:
    """Where and how the run deletes: the table, its id column, the requests' key column (None: no
    requests) and the MERGE's retry and broadcast limits."""

    table: TableRef
    run_id: str
    id_col: str
    request_key: str | None
    max_retries: int
    broadcast_limit_mb: float

    @property
    def requests_by_id(self) -> bool:
        return self.request_key is not None and self.request_key == self.id_col

    @property
    def merges(self) -> int:
        """How many MERGE commits the edit makes: the planned rows, then the requested keys of another column."""
        return 2 if self.request_key is not None and not self.requests_by_id else 1


def run_commits(spark: SparkSession, edit: LiveEdit, since: int) -> list[RunCommit]:
    """The run's MERGE commits from version ``since`` on, oldest first (bounded history)."""
    try:
        rows = edit.table.history(spark, since).where(
            (F.col("userMetadata") == commit_metadata(edit.run_id)) & (F.col("operation") == "MERGE")) \
            .orderBy("version").select("version", "readVersion", "operationMetrics",
                                       F.date_format(F.to_utc_timestamp("timestamp", F.current_timezone()),
                                                     "yyyy-MM-dd'T'HH:mm:ss.SSS+00:00").alias("at")).collect()
    except Exception as exc:  # noqa: BLE001 - one line naming the table
        raise DistunlearnError(f"cannot read the history of {edit.table.text}: {root_cause(exc)}") from None
    return [RunCommit(int(r["version"]), int(r["readVersion"]), step,
                      _metric(r["operationMetrics"], "numTargetRowsDeleted"), r["at"]) for step, r in enumerate(rows)]


def _metric(metrics: dict | None, name: str) -> int | None:
    value = (metrics or {}).get(name)
    return None if value is None else int(value)


def commit(spark: SparkSession, edit: LiveEdit, planned_ids: DataFrame, planned: KeySet,
           requests: DataFrame | None, request_keys: KeySet | None, since: int,
           done: list[RunCommit]) -> list[RunCommit]:
    """Make the MERGE commits the run has not made yet (``done``: those a rerun found in the history, from
    ``run_commits``) and return all of them. ``planned_ids``: column ``id`` (None: requests by id only);
    ``requests``: column ``__request_key``."""
    if not done:
        by_key = requests.select(F.col("__request_key").alias("key")) \
            if edit.requests_by_id and requests is not None else None
        if planned_ids is None:
            keys, size = by_key, request_keys
        elif by_key is None:
            keys, size = planned_ids.select(F.col("id").alias("key")), planned
        else:
            keys = planned_ids.select(F.col("id").alias("key")).unionByName(by_key).distinct()
            size = KeySet(planned.rows + request_keys.rows, max(planned.row_bytes, request_keys.row_bytes))
        _merge(spark, edit, keys, size, edit.id_col, step=0)
    if edit.merges == 2 and len(done) < 2:
        _merge(spark, edit, requests.select(F.col("__request_key").alias("key")), request_keys,
               edit.request_key, step=1)
    return run_commits(spark, edit, since)


def _merge(spark: SparkSession, edit: LiveEdit, keys: DataFrame, size: KeySet, column: str, step: int) -> None:
    """One MERGE, tried again after each conflict (pauses of 1, 2, 4, ... s, at most 30, with jitter)."""
    for attempt in range(edit.max_retries + 1):
        started = edit.table.latest_version(spark)
        try:
            merge_delete(spark, edit.table, keys, size, column, edit.run_id, edit.broadcast_limit_mb, step + 1)
            return
        except Exception as exc:  # noqa: BLE001 - conflicts are retried, anything else is named and raised
            if not is_conflict(exc):
                raise DistunlearnError(f"{edit.table.text}: the MERGE failed: {root_cause(exc)}") from exc
            line = conflict_line(exc, _version_of(spark, edit.table, exc, started))
        if attempt == edit.max_retries:
            done = "nothing of this run was committed" if step == 0 else \
                "the run's MERGE of its planned rows committed, its MERGE by request key did not"
            raise ConflictError(f"{edit.table.text}: the MERGE conflicted with another writer {attempt + 1} "
                                f"time(s), last {line}; {done}; rerun with {{run_id={edit.run_id}}} (and a larger "
                                f"{{max_retries}}) once the writer pauses", "run_id", "max_retries")
        pause = min(MAX_PAUSE_SECONDS, 2.0 ** attempt) * (0.5 + random.random())
        log.warning("%s: %s; the MERGE committed nothing and starts again in %.1f s (retry %d of %d)",
                    edit.table.text, line, pause, attempt + 1, edit.max_retries)
        time.sleep(pause)


def _version_of(spark: SparkSession, table: TableRef, exc: BaseException, since: int) -> int | None:
    """The version of the commit a conflict names: Delta's, or the one after ``since`` whose commitInfo has
    the named timestamp (read from those commits' log files)."""
    other = conflicting_commit(exc) or {}
    if other.get("version") is not None or other.get("timestamp") is None:
        return other.get("version")
    try:
        location = table.require_delta(spark, "{source}")["location"]
        versions = list(range(since + 1, table.latest_version(spark) + 1))
        row = table.commit_actions(spark, location, versions).where(
            F.get_json_object("value", "$.commitInfo.timestamp").cast("long") == int(other["timestamp"])) \
            .select("version").first()
    except Exception:  # noqa: BLE001 - the line is still right without the version
        return None
    return None if row is None else int(row["version"])


def committed_manifest(spark: SparkSession, edit: LiveEdit, commits: list[RunCommit], manifest: TableRef,
                       requests: DataFrame | None, hash_key: bytes | None, planned_version: int,
                       planned_ids: DataFrame | None = None) -> bool:
    """Replace the run's staged manifest rows by the rows its commits deleted, in one commit: each MERGE
    deleted, of the version it read, the rows it matched (staged ids; requested keys). Staged rows that
    were gone before the MERGE read the table drop out; rows of a requested key appended since the plan
    come in with reason ``request``. ``planned_ids`` (raw ids, when the run still has them) only narrows
    what is hashed; without it (a rerun after a crash) the staged rows alone decide.

    When the first MERGE read the planned version and a MERGE by request key deleted nothing, the staged
    rows are what committed and nothing is written. Returns whether the manifest was rewritten."""
    if commits[0].read_version == planned_version and all(c.rows_deleted == 0 for c in commits[1:]):
        return False
    staged = freeze(manifest.read(spark).where(F.col("run_id") == edit.run_id))
    deleted = None
    for c in commits:
        snapshot = edit.table.read(spark, version=c.read_version)
        rows = snapshot.select(col(edit.id_col).alias("id"),
                               (col(edit.request_key) if edit.request_key else F.lit(None)).alias("__key"))
        if c.step == 0:
            by_staged = rows.select("id")
            if planned_ids is not None:
                by_staged = by_staged.join(planned_ids.select("id").hint(SHUFFLE_JOIN), "id", "left_semi")
            part = _space(by_staged, hash_key).join(staged.select("id").hint(SHUFFLE_JOIN), "id", "left_semi")
            if edit.requests_by_id and requests is not None:
                part = part.unionByName(_space(_requested(rows, requests), hash_key))
        else:
            part = _space(_requested(rows, requests), hash_key)
        deleted = part if deleted is None else deleted.unionByName(part)
    result = deleted.distinct().join(staged.drop("run_id"), "id", "left").select(
        F.lit(edit.run_id).alias("run_id"), "id", F.coalesce("reason", F.lit("request")).alias("reason"),
        "rule", "score", "rank")
    replace_run_rows(manifest, result.select(*(staged.schema.fieldNames())), edit.run_id)
    return True


def _requested(rows: DataFrame, requests: DataFrame) -> DataFrame:
    return rows.join(requests.select(F.col("__request_key").alias("__key")), "__key", "left_semi").select("id")


def _space(ids: DataFrame, hash_key: bytes | None) -> DataFrame:
    """Ids as the manifest holds them: raw, or their HMAC with ``--hash-ids``."""
    if hash_key is None:
        return ids.select("id")
    from distunlearn.udfs.hashing import id_hasher

    return ids.select("id").mapInArrow(id_hasher(hash_key), StructType([StructField("id", StringType())]))


def withdraw_manifest(spark: SparkSession, manifest: TableRef, run_id: str) -> None:
    """Remove the run's staged rows (its edit never committed); nothing to do without a manifest."""
    if manifest.is_delta(spark):
        replace_run_rows(manifest, spark.createDataFrame([], manifest.read(spark).schema), run_id)


def removed_files(spark: SparkSession, table: TableRef, versions: list[int]) -> list[str]:
    """Files (paths relative to the table) that the commits ``versions`` removed from the table or wrote
    as change data: the files that held the rows those commits deleted."""
    if not versions:
        return []
    location = table.require_delta(spark, "{source}")["location"]
    actions = table.commit_actions(spark, location, versions).select(
        F.get_json_object("value", "$.remove.path").alias("removed"),
        F.get_json_object("value", "$.cdc.path").alias("cdc"))
    rows = actions.where(F.col("removed").isNotNull() | F.col("cdc").isNotNull()).collect()
    return sorted({unquote(r["removed"] or r["cdc"]) for r in rows})
