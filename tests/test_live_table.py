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
from distunlearn import job
from distunlearn.cli import main
from distunlearn.pipeline import read_labelled
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
    return ["unlearn", "--source", str(source), "--in-place", "--purge", "--retention-hours", "0", "--only-writer",
            "--rule", "likelihood_ratio", "--run-id", run_id, "--requests", requests, "--quiet", *DOMAINS_FLAGS]


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


def once_a_job_runs(spark, act, timeout: float = 60) -> None:
    """Call ``act`` as soon as a Spark job runs: the MERGE has read its snapshot and not yet committed."""
    tracker, deadline = spark.sparkContext.statusTracker(), time.monotonic() + timeout
    while not tracker.getActiveJobsIds() and time.monotonic() < deadline:
        time.sleep(0.005)
    act()


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
            timers.append(threading.Thread(target=once_a_job_runs, args=(spark, act)))
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


def appending(table: Path, every: float, count: int, prefix: str) -> subprocess.Popen:
    """``other_writer.py loop``: ``count`` appends of one row each, ``every`` seconds apart."""
    return subprocess.Popen([sys.executable, WRITER, str(table), "loop", str(every), str(count), prefix],
                            stdout=subprocess.PIPE, text=True)


def appended_ids(proc: subprocess.Popen) -> set[str]:
    return {json.loads(line)["id"] for line in proc.stdout.read().splitlines() if line.strip()}


@pytest.mark.reliability("concurrent writer")
def test_a_writer_appending_every_fifth_of_a_second_then_pausing(spark, tmp_path, monkeypatch, capsys):
    """A writer appends a row every 0.2 s while the run plans and tries its MERGE: Delta reports each append
    that lands during the MERGE as a conflict, the MERGE starts again after a pause and commits once the
    writer pauses. Every appended row is kept, and requested keys appended during the run are erased."""
    source = tmp_path / "events"
    ids = make_table(spark, source, DELETION_VECTORS)
    requested = {ids[70], "stream-3", "stream-12"}
    requests = requests_table(spark, tmp_path / "requests", sorted(requested))
    before = ids_in(spark, source)
    writers = []

    def read_then_start_writer(*args, **kwargs):       # the writer starts once the run has pinned its version
        labelled = read_labelled(*args, **kwargs)
        writers.append(appending(source, 0.2, 30, "stream"))
        return labelled

    monkeypatch.setattr(job, "read_labelled", read_then_start_writer)
    try:
        code = main([*purge_flags(source, "stream-1", requests), "--report", str(tmp_path / "report.json")])
    finally:
        for writer in writers:
            writer.wait(timeout=120)
    err = capsys.readouterr().err
    assert code == 0, err
    appended = appended_ids(writers[0])
    assert len(appended) == 30
    check_outcome(spark, source, "stream-1", before, appended, requested)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["commits_by_others_before_edit"] > 0 and report["source_version_read_by_edit"] > report["source_version"]
    reliability.record("a writer appending every 0.2 s for 6 s during an in-place purge",
                       "exit 0 once it paused; every appended row kept, requested keys erased",
                       rows_checked=len(appended), rows_lost=len(appended - requested - ids_in(spark, source)))
    assert main(["verify", "--source", str(source), "--run-id", "stream-1", "--quiet"]) == 0


@pytest.mark.reliability("concurrent writer")
def test_a_writer_that_never_pauses_stops_the_run_with_nothing_of_it_left(spark, tmp_path, capsys):
    """On a Delta table (Serializable: every commit that adds files conflicts with a MERGE that ran while
    it landed) a writer that appends faster than the MERGE takes never lets it commit: after its retries the
    run exits 3 naming the other writer's commit, with no commit and no manifest row of its own."""
    source = tmp_path / "events"
    ids = make_table(spark, source, DELETION_VECTORS)
    requests = requests_table(spark, tmp_path / "requests", [ids[70]])
    before = ids_in(spark, source)
    writer = appending(source, 0.2, 2000, "busy")
    try:
        code = main([*purge_flags(source, "busy-1", requests), "--max-retries", "0"])
    finally:
        writer.kill()
        writer.wait(timeout=60)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 3, line
    assert "ConcurrentAppendException with WRITE, version" in line and "by delta-rs" in line, line
    appended = appended_ids(writer)
    final = ids_in(spark, source)
    reliability.record("a writer appending every 0.2 s without pause (--max-retries 0)",
                       "exit 3 naming the conflicting commit; nothing of the run committed",
                       rows_checked=len(before | appended), rows_lost=len((before | appended) - final))
    assert before | appended <= final
    # the kill may land between the writer's last commit and its line reporting it: that one row is its own
    unreported = final - before - appended
    assert len(unreported) <= 1 and all(i.startswith("busy-") for i in unreported), unreported
    assert not [h for h in history(spark, source) if h["operation"] in ("MERGE", "RESTORE")]
    assert manifest_ids(spark, source, "busy-1") == set()


def age_log_files(table: Path, up_to_version: int, days: float = 3) -> None:
    """Date the log's files of versions up to ``up_to_version`` back by ``days`` (Delta cleans the log by
    the files' modification times, cut off at a whole day)."""
    old = os.path.getmtime(table / "_delta_log") - days * 86400
    for f in (table / "_delta_log").iterdir():
        stem = f.name.split(".")[0]
        if stem.isdigit() and int(stem) <= up_to_version:
            os.utime(f, (old, old))


@pytest.mark.reliability("concurrent writer")
def test_verify_holds_after_another_writers_compaction_and_the_logs_cleanup(spark, tmp_path, capsys):
    """verify checks the files the run's own commits removed (recorded in its ledger entry): another
    writer's compaction of the purged table (which removes files the run wrote, holding no deleted row)
    does not fail it, nor does Delta's cleanup of the log past the run's commits."""
    source = tmp_path / "events"
    ids = make_table(spark, source, DELETION_VECTORS)
    requests = requests_table(spark, tmp_path / "requests", [ids[70]])
    writer = OtherWriter(source)
    try:
        assert main(purge_flags(source, "compacted-1", requests)) == 0
        kept = ids_in(spark, source)
        for k in range(2):
            writer.append(f"later-{k}")
        compaction = writer.optimize()
    finally:
        writer.close()
    removed = [json.loads(a)["remove"]["path"] for a in (source / "_delta_log" / f"{compaction:020d}.json")
               .read_text().splitlines() if '"remove"' in a]
    assert removed                                                  # the compaction did remove files
    verify = ["verify", "--source", str(source), "--run-id", "compacted-1", "--quiet"]
    capsys.readouterr()
    assert main(verify) == 0, capsys.readouterr()
    assert "PASS purged files gone" in capsys.readouterr().out

    table = f"delta.`{source}`"
    spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ('delta.logRetentionDuration' = 'interval 1 hours', "
              f"'delta.checkpointInterval' = '1')")
    checkpoint = spark.sql(f"DESCRIBE HISTORY {table} LIMIT 1").first()["version"]
    age_log_files(source, checkpoint)
    spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ('distunlearn.test' = 'cleanup')")   # checkpoint + cleanup
    merge_commit = source / "_delta_log" / f"{1:020d}.json"
    assert not merge_commit.exists(), "the log was not cleaned past the run's MERGE"
    capsys.readouterr()
    assert main(verify) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    reliability.record("another writer's compaction of a purged table, then the log cleaned past the run",
                       "verify passes on the run's own recorded files", rows_checked=len(kept) + 2,
                       rows_lost=len((kept | {"later-0", "later-1"}) - ids_in(spark, source)))
    assert out.count("PASS") == 4, out


def test_verify_with_the_nightly_purge_config(spark, tmp_path, monkeypatch, capsys):
    """``conf/nightly-purge.toml`` (manifest and ledger in an audit folder), its paths moved under a temp
    folder: ``unlearn --config`` then ``verify --config`` find the same ledger and pass."""
    lake = tmp_path / "lake"
    make_table(spark, tmp_path / "raw", {})
    posts = spark.read.format("delta").load(str(tmp_path / "raw")).select(
        F.col("id").alias("post_id"), F.when(F.col("topic") == "unwanted", "erased")
        .when(F.col("topic") == "retained", "active").otherwise("other").alias("author_status"), "embedding")
    posts.write.format("delta").save(str(lake / "silver" / "posts"))
    first = posts.orderBy("post_id").first()["post_id"]
    spark.createDataFrame([(first,)], "post_id string").write.format("delta").save(str(lake / "gdpr" / "post_requests"))
    shipped = (Path(__file__).parents[1] / "conf" / "nightly-purge.toml").read_text()
    assert "/lake/" in shipped and "/var/log/distunlearn/" in shipped
    config = tmp_path / "nightly.toml"
    config.write_text(shipped.replace('"/lake/', f'"{lake}/').replace("/var/log/distunlearn/", f"{tmp_path}/"))
    monkeypatch.setenv("DISTUNLEARN_HASH_KEY", "nightly-key")
    assert main(["unlearn", "--config", str(config), "--run-id", "nightly-1", "--quiet"]) == 0
    assert (lake / "audit" / "distunlearn_ledger" / "_delta_log").is_dir()
    assert first not in ids_in_column(spark, lake / "silver" / "posts", "post_id")
    capsys.readouterr()
    assert main(["verify", "--config", str(config), "--run-id", "nightly-1", "--quiet"]) == 0, capsys.readouterr()
    assert capsys.readouterr().out.count("PASS") == 4


def ids_in_column(spark, path, column):
    return {r[0] for r in spark.read.format("delta").load(str(path)).select(column).collect()}


def test_a_dataframe_source_is_pinned_at_plan_time(spark, tmp_path):
    """``u.plan(DataFrame).apply(output=...)`` writes the rows the plan saw: a row another writer appends
    between plan and apply is not in the edited table, and the edit is the planned snapshot minus the
    planned deletions."""
    from distunlearn import Unlearner
    from test_purge import DOMAINS

    source = tmp_path / "events"
    ids = make_table(spark, source, {})
    plan = Unlearner(rule="likelihood_ratio", **DOMAINS).plan(spark.read.format("delta").load(str(source)), spark=spark)
    writer = OtherWriter(source)
    try:
        writer.append("appended-after-plan")
    finally:
        writer.close()
    plan.apply(output=str(tmp_path / "edited"))
    deleted = {r["id"] for r in plan.deletion_set().collect()}
    assert deleted and ids_in(spark, tmp_path / "edited") == set(ids) - deleted
