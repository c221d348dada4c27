"""In-place runs on a table another process writes to while they run (``other_writer.py``, the ``deltalake``
package): appends and compaction timed into each step of the edit, a writer that pauses, one that never
does; ``verify`` after another writer's compaction and after the log's cleanup."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

import reliability
from distunlearn.cli import main
from distunlearn.spark import live_edit
from test_purge import DELETION_VECTORS, DOMAINS_FLAGS, ids_in, make_table, requests_table

WRITER = str(Path(__file__).with_name("other_writer.py"))


class OtherWriter:
    """``other_writer.py serve`` on a table: each call commits and returns the version it made."""

    def __init__(self, table: Path):
        self.proc = subprocess.Popen([sys.executable, WRITER, str(table), "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.versions: list[int] = []

    def send(self, line: str) -> int:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        version = json.loads(self.proc.stdout.readline())["version"]
        self.versions.append(version)
        return version

    def append(self, *ids: str) -> int:
        return self.send("append " + ",".join(ids))

    def optimize(self) -> int:
        return self.send("optimize")

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def history(spark, table):
    return spark.sql(f"DESCRIBE HISTORY delta.`{table}`").orderBy("version").collect()


def manifest_ids(spark, table, run_id):
    return {r["id"] for r in spark.read.format("delta").load(f"{table}_manifest")
            .where(F.col("run_id") == run_id).select("id").collect()}


def purge_flags(source, run_id, requests):
    return ["unlearn", "--source", str(source), "--in-place", "--purge", "--retention-hours", "0", "--rule",
            "likelihood_ratio", "--run-id", run_id, "--requests", requests, "--quiet", *DOMAINS_FLAGS]


def check_outcome(spark, source, run_id, before: set, appended: set, requested: set) -> set:
    """The run's deletions applied and listed exactly in the manifest; every row another writer added
    still there unless requested; nothing undone. Returns the deleted ids."""
    final = ids_in(spark, source)
    deleted = (before | appended) - final
    assert appended - requested <= final
    assert not requested & final
    assert manifest_ids(spark, source, run_id) == deleted
    operations = [h["operation"] for h in history(spark, source)]
    assert "RESTORE" not in operations
    return deleted


STEPS = ("before the MERGE", "during the MERGE", "right after the MERGE", "compaction during the MERGE")


@pytest.mark.reliability("concurrent writer")
@pytest.mark.parametrize("step", STEPS)
def test_a_commit_timed_into_each_step_of_the_edit(spark, tmp_path, monkeypatch, capsys, step):
    """Another process commits at one point of the edit: before the MERGE starts (it reads the newer
    version), while it runs (Delta reports a conflict: the MERGE committed nothing and runs again), right
    after it. Every row the other writer committed stays, and the run's deletions (including a requested
    key that writer appends) are applied and listed exactly."""
    source = tmp_path / "events"
    ids = make_table(spark, source, DELETION_VECTORS)
    late = "late-requested"
    requests = requests_table(spark, tmp_path / "requests", [ids[70], late])
    before = ids_in(spark, source)
    writer = OtherWriter(source)
    merge = live_edit.merge_delete
    timers = []

    def timed_merge(*args, **kwargs):
        if step == "before the MERGE" and not writer.versions:
            writer.append("appended-0", late)
        elif step.endswith("during the MERGE") and not timers:
            act = writer.optimize if step.startswith("compaction") else (lambda: writer.append("appended-0", late))
            timers.append(threading.Timer(0.2, act))
            timers[0].start()
        merge(*args, **kwargs)
        if step == "right after the MERGE" and not writer.versions:
            writer.append("appended-0", late)

    monkeypatch.setattr(live_edit, "merge_delete", timed_merge)
    try:
        for _ in range(2):            # the compaction needs small files: two more appends first
            writer.append(f"early-{len(writer.versions)}")
        writer.versions.clear()
        capsys.readouterr()
        code = main([*purge_flags(source, "timed-1", requests), "--report", str(tmp_path / "report.json")])
        for timer in timers:
            timer.join()
    finally:
        writer.close()
    err = capsys.readouterr().err
    assert code == 0, err
    appended = {"early-0", "early-1"} | ({"appended-0", late} if not step.startswith("compaction") else set())
    after = step == "right after the MERGE"                   # a key requested and appended after the edit
    requested = {ids[70]} if after else {ids[70], late}       # stays: the next run erases it
    deleted = check_outcome(spark, source, "timed-1", before | {"early-0", "early-1"}, appended, requested)
    report = json.loads((tmp_path / "report.json").read_text())
    merges = [h for h in history(spark, source) if h["operation"] == "MERGE"]
    assert len(merges) == 1 and merges[0]["version"] == report["source_version_written"]
    if step.endswith("during the MERGE"):                       # the other commit landed first; the MERGE redid
        assert "conflict" in err.lower() or "Concurrent" in err, err
        assert writer.versions[0] < merges[0]["version"] and merges[0]["readVersion"] >= writer.versions[0]
    if after:
        assert late in ids_in(spark, source)
    reliability.record(f"another writer's commit {step}", "exit 0; its rows kept; the run's deletions applied",
                       rows_checked=len(appended), rows_lost=len(appended - requested - ids_in(spark, source)))
    assert len(deleted) == report["deleted_committed"] + report["deleted_requested"]
    capsys.readouterr()
    assert main(["verify", "--source", str(source), "--run-id", "timed-1", "--quiet"]) == 0, capsys.readouterr()
