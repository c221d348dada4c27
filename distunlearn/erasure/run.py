"""``distunlearn erase``: every pending erasure request, on every table that holds the subject's rows.

Each table gets one edit (a MERGE by key, or an in-place ``unlearn`` run with the subject's keys as
requests) under the run id, then REORG/VACUUM with the table's own retention. The run's ledger row
records each table's progress, so a rerun after a crash finds the commits it made in the table's history
and edits no table twice. The erasure status table is then brought up to date in one commit.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from distunlearn.erasure.config import ErasedTable, ErasureConfig
from distunlearn.erasure.status import TableOutcome, update_status
from distunlearn.erasure.subjects import check_tables, present_subjects, read_subjects, subject_keys
from distunlearn.progress import phase
from distunlearn.run_report import Purge
from distunlearn.spark.checkpoints import freeze
from distunlearn.spark.live_edit import LiveEdit, commit, removed_files, run_commits
from distunlearn.spark.ledger import Ledger
from distunlearn.spark.purge import purge
from distunlearn.spark.source import read_requests
from distunlearn.spark.table import first_line

log = logging.getLogger("distunlearn")


def run_erasure(spark: SparkSession, config: ErasureConfig, run_id: str | None = None,
                now: dt.datetime | None = None) -> dict:
    """Erase the subjects of the requests table from every listed table and update the status; returns
    the run's report. ``now`` (UTC) dates the status (default: the clock). Idempotent per run id."""
    run_id = run_id or str(uuid.uuid4())
    hash_key = config.hash_key()
    ledger = Ledger(spark, config.ledger_table)
    earlier = ledger.get(run_id)
    if earlier is not None and earlier["status"] == "succeeded":
        log.info("run %s already succeeded; nothing to do", run_id)
        return {**ledger.report(run_id), "repeated": True}
    report = ledger.report(run_id) if earlier is not None else None
    if report is None:
        requests = config.requests_table
        requests.require_delta(spark, "requests")
        report = {"kind": "erasure", "run_id": run_id, "requests": requests.text,
                  "requests_version": requests.latest_version(spark),
                  "started_at": dt.datetime.now(dt.timezone.utc).isoformat(), "tables": {}}
        check_tables(spark, config, report["requests_version"])
    else:
        log.info("run %s: resuming (tables done: %s)", run_id,
                 ", ".join(n for n, s in report["tables"].items() if s.get("done")) or "none")
    with phase("erasure requests") as detail:   # a bad requests table stops the run here, nothing written
        subjects = read_subjects(spark, config, hash_key, report["requests_version"])
        detail.update(subjects=subjects.count())
    if earlier is None:
        ledger.record(run_id, "planned", report)
    try:
        outcomes = []
        for t in config.order:
            with phase(f"table {t.name}") as detail:
                outcome = _erase(spark, config, t, subjects, run_id, report, ledger)
                detail.update(deleted=outcome.rows_deleted, subjects_left=outcome.present_count)
            outcomes.append(outcome)
        with phase("erasure status") as detail:
            report["status"] = update_status(spark, config, subjects, outcomes, run_id,
                                             now or dt.datetime.now(dt.timezone.utc))
            detail.update(**report["status"])
        report["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        ledger.record(run_id, "succeeded", report)
    except Exception as exc:
        ledger.record(run_id, "failed", error=first_line(exc))
        raise
    return report


def _erase(spark: SparkSession, config: ErasureConfig, t: ErasedTable, subjects, run_id: str, report: dict,
           ledger: Ledger) -> TableOutcome:
    """One table: its edit (once per run id, found in the history on a rerun), the purge, and which
    subjects it still holds now."""
    state = report["tables"].get(t.name)
    if state is None:   # recorded before the edit: a rerun looks for the run's commits from this version on
        state = {"location": t.table.require_delta(spark, f"tables.{t.name}")["location"],
                 "version_before": t.table.latest_version(spark),
                 "edit_run_id": f"{run_id}.{t.name}" if t.unlearn else run_id}
        report["tables"][t.name] = state
        ledger.record(run_id, "running", report)
    keys = freeze(subject_keys(spark, config, t, subjects))
    edit = LiveEdit(t.table, state["edit_run_id"], t.key, t.key, config.max_retries, config.broadcast_limit_mb)
    if state.get("done"):
        deleted = _deleted_subjects(spark, t, keys, state["commits"], None)
    else:
        commits = run_commits(spark, edit, state["version_before"])
        held = None if commits else freeze(present_subjects(t.table.read(spark), t, keys))
        if commits:
            log.info("table %s: the run's edit committed as version %d earlier", t.name, commits[0].version)
        holds = not commits and held.count() > 0
        if t.unlearn and (commits or holds):   # an unlearn run also finishes itself after a crash
            commits = _unlearn(spark, config, t, keys, edit, state)
        elif holds:
            requests = read_requests(spark, keys.select(F.col("key").alias(t.key)), t.key, config.broadcast_limit_mb)
            commits = commit(spark, edit, None, None, requests.keys, requests.size, state["version_before"], [])
        state["commits"] = [dataclasses.asdict(c) for c in commits]
        deleted = _deleted_subjects(spark, t, keys, state["commits"], held)
        state["removed_files"] = removed_files(spark, t.table, [c.version for c in commits])
        purged = purge(spark, t.table, t.retention_hours, edit.run_id, state["version_before"], t.key, t.only_writer)
        state["purge"] = purged.to_dict()
        reorg = purged.reorg_version
        if reorg is not None:
            state["removed_files"] = sorted(set(state["removed_files"]) | set(removed_files(spark, t.table, [reorg])))
        state["done"] = True
        ledger.record(run_id, "running", report)
    version = t.table.latest_version(spark)
    present = freeze(present_subjects(t.table.read(spark, version=version), t, keys))
    return TableOutcome(t, state, version, present, present.count(), deleted)


def _deleted_subjects(spark: SparkSession, t: ErasedTable, keys, commits: list[dict], held):
    """(subject): the subjects whose rows the run's commits may have deleted: those ``held`` before the edit,
    or (after a crash) those the version the first commit read held; no commit: none. None when that version
    can no longer be read (a rerun after the purge)."""
    if not commits:
        return keys.select("subject").limit(0)
    if held is not None:
        return held
    try:
        return freeze(present_subjects(t.table.read(spark, version=commits[0]["read_version"]), t, keys))
    except Exception as exc:  # noqa: BLE001 - the status then dates every absent subject from this run
        log.warning("table %s: version %d is no longer readable (%s); subjects absent now are dated from this "
                    "run's purge", t.name, commits[0]["read_version"], first_line(exc))
        return None


def _unlearn(spark: SparkSession, config: ErasureConfig, t: ErasedTable, keys, edit: LiveEdit, state: dict):
    """The table's distributional part: an in-place ``unlearn`` run (no purge of its own) with the subjects'
    keys as its requests, made only when the table holds a requested subject's rows; its MERGE commits carry
    the run id ``<run id>.<table>``."""
    from distunlearn.job import run_unlearn

    requests = keys.select(F.col("key").alias(t.key)) if keys.limit(1).count() else None   # none left: no requests
    report = run_unlearn(spark, config.unlearn_config(t, requests, edit.run_id)).to_dict()
    state["unlearn"] = {k: v for k, v in report.items()
                        if k in ("deleted", "deleted_requested", "rule", "alpha", "epsilon", "kl_removal_after",
                                 "kl_preservation_after", "manifest")}
    return run_commits(spark, edit, state["version_before"])


def summary(report: dict) -> str:
    """The run in a few lines: each table's edit and purge, then the status counts."""
    lines = [f"erasure run {report['run_id']}: requests {report['requests']} version {report['requests_version']}"
             + (" (this run id had already succeeded: nothing was done again)" if report.get("repeated") else "")]
    for name, state in report["tables"].items():
        commits, purged = state.get("commits") or [], state.get("purge") or {}
        deleted = sum(c["rows_deleted"] or 0 for c in commits)
        edit = f"deleted {deleted} row(s) in version {commits[-1]['version']}" if commits else "nothing to delete"
        vacuum = purged.get("vacuum") or {}
        lines.append(f"  {name}: {edit}; VACUUM (retain {Purge.from_dict(purged).retention_applied()}) deleted "
                     f"{vacuum.get('numDeletedFiles', 0)} file(s); the files this run removed may go from "
                     f"{(purged.get('erasable_from') or '?')[:19]} UTC")
    status = report.get("status") or {}
    lines.append("  status of (request, table) pairs: " + ", ".join(f"{n} {s}" for s, n in status.items()))
    return "\n".join(lines)
