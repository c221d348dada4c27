"""``distunlearn erasure-status``: the status of every request, checked against the tables as they are
now, and a certificate per request (JSON and markdown) an auditor can read."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from distunlearn.erasure.config import ErasureConfig
from distunlearn.erasure.status import STATUSES, files_left, read_status, status_label
from distunlearn.erasure.subjects import present_subjects, read_subjects, subject_keys
from distunlearn.spark.ledger import Ledger
from distunlearn.spark.purge import id_in_log_statistics

LISTED = 50   # request lines printed; the rest are counted


@dataclass
class ErasureStatus:
    """Requests by status (the worst of their tables), the lines to print (overdue first) and the
    failed checks: a table holding a removed subject's row, or a file of an erased one still stored."""

    at: dt.datetime
    counts: dict
    lines: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    certificates: int = 0

    @property
    def overdue(self) -> int:
        return self.counts.get("overdue", 0)


def erasure_status(spark: SparkSession, config: ErasureConfig, now: dt.datetime | None = None,
                   certificates: str | None = None) -> ErasureStatus:
    """Read the status table, recompute each row's status at ``now``, check every table's current version
    for rows of each subject (and the files of erased ones), print-ready; write certificates to
    ``certificates`` (a local folder) when given."""
    now = now or dt.datetime.now(dt.timezone.utc)
    rows = read_status(spark, config).withColumn("status", status_label(now))
    checks, files_left = _table_checks(spark, config, rows)
    rows = rows.join(checks, ["subject", "table"], "left")
    rank = F.array_position(F.array(*[F.lit(s) for s in STATUSES]), F.col("status"))
    per_request = rows.groupBy("subject").agg(
        F.min(rank).cast("int").alias("rank"), F.first("request_id", ignorenulls=True).alias("request_id"),
        F.min("received_at").alias("received_at"), F.min("due_by").alias("due_by"),
        F.sort_array(F.collect_list(F.struct(*[c for c in rows.columns if c != "subject"]))).alias("tables")) \
        .withColumn("status", F.element_at(F.array(*[F.lit(s) for s in STATUSES]), F.col("rank")))
    counts = {r["status"]: int(r["count"]) for r in per_request.groupBy("status").count().collect()}
    result = ErasureStatus(now, {s: counts.get(s, 0) for s in STATUSES})
    folder = Path(certificates) if certificates else None
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
    ordered = per_request.orderBy("rank", "due_by", "subject")
    for row in ordered.toLocalIterator():
        request = _request(row, now, files_left)
        result.failed_checks += [f"{request['subject'][:12]} {c['table']}: {c['name']}: {c['detail']}"
                                 for c in request["checks"] if c["passed"] is False and not c.get("warning")]
        if request["status"] != "erased" and len(result.lines) < LISTED:
            result.lines.append(_line(request))
        if folder:
            _write_certificate(folder, request)
            result.certificates += 1
    return result


def _table_checks(spark: SparkSession, config: ErasureConfig, rows: DataFrame) -> tuple[DataFrame, dict]:
    """(subject, table, held_now, version_checked, key_in_log_statistics): each listed table's current
    version looked at for the subjects of the requests table now; and {(table, run): files left} for the
    runs that erased rows: how many files their commits removed are still on storage."""
    requests = config.requests_table
    subjects = read_subjects(spark, config, config.hash_key(), requests.latest_version(spark))
    ledger, parts, files_left = Ledger(spark, config.ledger_table), [], {}
    for t in config.tables:
        detail = t.table.require_delta(spark, f"tables.{t.name}")
        version = t.table.latest_version(spark)
        current = t.table.read(spark, version=version)
        keys = subject_keys(spark, config, t, subjects)
        held = present_subjects(current, t, keys).withColumn("held_now", F.lit(True))
        in_stats = id_in_log_statistics(detail.get("properties") or {}, current.columns, t.key)
        parts.append(subjects.select("subject").join(held, "subject", "left").select(
            "subject", F.lit(t.name).alias("table"), F.coalesce("held_now", F.lit(False)).alias("held_now"),
            F.lit(version).alias("version_checked"), F.lit(in_stats).alias("key_in_log_statistics")))
        files_left.update({(t.name, run): n for run, n in _files_left(spark, t.name, detail["location"], rows,
                                                                      ledger).items()})
    checks = parts[0]
    for part in parts[1:]:
        checks = checks.unionByName(part)
    return checks, files_left


def _files_left(spark: SparkSession, table: str, location: str, rows: DataFrame, ledger: Ledger) -> dict[str, int]:
    """For each run that erased rows of ``table``: how many files its commits removed are still stored
    (-1: the run recorded no list, or storage could not be listed)."""
    runs = [r["removed_by_run"] for r in rows.where((F.col("table") == table) & F.col("erased_at").isNotNull())
            .select("removed_by_run").distinct().collect()]
    try:
        left = files_left(spark, ledger, table, location, runs)
    except Exception:  # noqa: BLE001 - a check that cannot look does not pass
        return {run: -1 for run in runs}
    return {run: -1 if n is None else n for run, n in left.items()}


def _request(row, now: dt.datetime, files_left: dict) -> dict:
    """One request's certificate: who (the subject's HMAC), when, each table's times and versions, and the
    checks run now with their results."""
    tables, checks = [], []
    for t in row["tables"]:
        tables.append({"table": t["table"], "location": t["location"], "status": t["status"],
                       "removed_at": _iso(t["removed_at"]), "removed_version": t["removed_version"],
                       "removed_by_run": t["removed_by_run"], "erasable_from": _iso(t["erasable_from"]),
                       "erased_at": _iso(t["erased_at"]), "erased_by_run": t["erased_by_run"]})
        if t["held_now"] is None:
            checks.append({"table": t["table"], "name": "no row in the current version", "passed": None,
                           "detail": "not checked: the subject is no longer in the requests table"})
            continue
        checks.append({"table": t["table"], "name": "no row in the current version",
                       "passed": not t["held_now"] if t["removed_at"] is not None else None,
                       "detail": f"version {t['version_checked']}: "
                                 + ("a row of the subject is present" if t["held_now"] else "no row of the subject")})
        if t["erased_at"] is not None:
            left = files_left.get((t["table"], t["removed_by_run"]), -1)
            checks.append({"table": t["table"], "name": "files that held the rows gone from storage",
                           "passed": left == 0,
                           "detail": "every file the removing run's commits removed is gone" if left == 0 else
                           "cannot tell: no list of the files, or storage unreadable" if left < 0 else
                           f"{left} file(s) still stored"})
        checks.append({"table": t["table"], "name": "key column kept out of the log's file statistics",
                       "passed": not t["key_in_log_statistics"], "warning": True,   # the log's cleanup ends it
                       "detail": "the log holds no min/max of the key column" if not t["key_in_log_statistics"]
                       else "the log holds per-file min/max values of the key column until its cleanup"})
    return {"subject": row["subject"], "request_id": row["request_id"], "status": row["status"],
            "received_at": _iso(row["received_at"]), "due_by": _iso(row["due_by"]), "checked_at": now.isoformat(),
            "tables": tables, "checks": checks}


def _line(request: dict) -> str:
    who = f"request {request['request_id']} " if request["request_id"] else ""
    tables = ", ".join(f"{t['table']} " + ("erased" if t["erased_at"] else
                                           f"removed, erasable from {t['erasable_from'][:16]}" if t["removed_at"]
                                           else "pending") for t in request["tables"])
    return (f"{request['status'].upper():8} {who}subject {request['subject'][:16]} received "
            f"{request['received_at'][:10]} due {request['due_by'][:10]}: {tables}")


def _write_certificate(folder: Path, request: dict) -> None:
    name = folder / f"erasure-{request['subject'][:32]}"
    name.with_suffix(".json").write_text(json.dumps(request, indent=2))
    lines = ["# Erasure certificate", "",
             f"- subject (HMAC-SHA256 of the key): `{request['subject']}`",
             *([f"- request: {request['request_id']}"] if request["request_id"] else []),
             f"- received: {request['received_at']}; due by: {request['due_by']}",
             f"- status: **{request['status']}** (checked {request['checked_at']})", "",
             "| table | status | removed at | version | erasable from | erased at |", "|---|---|---|---|---|---|",
             *[f"| {t['table']} | {t['status']} | {t['removed_at'] or '-'} | {t['removed_version'] or '-'} | "
               f"{t['erasable_from'] or '-'} | {t['erased_at'] or '-'} |" for t in request["tables"]],
             "", "## Checks", "",
             *[f"- {_verdict(c)} {c['table']}: {c['name']}: {c['detail']}" for c in request["checks"]]]
    name.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _verdict(check: dict) -> str:
    if check["passed"] is None:
        return "n/a"
    return "PASS" if check["passed"] else "WARN" if check.get("warning") else "FAIL"


def _iso(value) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.timezone.utc).isoformat() if isinstance(value, dt.datetime) else str(value)
