"""In-place purges on real Delta tables: physical erasure, requests, hashing, idempotency, verify, driver
crashes at four points of a run (one run, imaged at the first three and killed at the last). Other writers
committing during a run: ``test_live_table``."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import reliability
from conftest import SMALL_DRIVER_FLAGS, domain_table
from distunlearn.cli import main
from distunlearn.synthetic import gaussian_domains
from distunlearn.udfs.hashing import hmac_hex

KEY = "test-hmac-key"
DOMAINS = dict(unwanted="topic = 'unwanted'", retained="topic = 'retained'")


def make_table(spark, path, features: dict) -> list[str]:
    """60 unwanted, 240 retained, 20 other rows with string ids; the id is kept out of the log's statistics."""
    x1, x2 = gaussian_domains(60, 240, 4, shift=0.8, seed=3)
    x3 = np.random.default_rng(1).standard_normal((20, 4))
    table = domain_table(x1, x2, x_neither=x3, id_type="string", seed=9)
    rng = np.random.default_rng(4)
    ids = [f"{i}-{rng.integers(1 << 62):016x}" for i in table.column("id").to_pylist()]
    table = table.set_column(0, "id", pa.array(ids, pa.string()))
    writer = spark.createDataFrame(table).repartition(3).write.format("delta") \
        .option("delta.dataSkippingStatsColumns", "topic,payload")
    for key, value in features.items():
        writer = writer.option(key, value)
    writer.save(str(path))
    return ids


def requests_table(spark, path, ids):
    spark.createDataFrame([(i,) for i in ids], "id string").write.format("delta").save(str(path))
    return str(path)


def ids_in(spark, path):
    return {r["id"] for r in spark.read.format("delta").load(str(path)).select("id").collect()}


def files_under(root: Path):
    return [p for p in root.rglob("*") if p.is_file()]


DELETION_VECTORS = {"delta.enableDeletionVectors": "true"}
CHANGE_DATA_FEED = {"delta.enableChangeDataFeed": "true"}


@pytest.mark.stacks
def test_in_place_purge_erases_physically(spark, tmp_path, monkeypatch, capsys):
    """A table with the change data feed and no deletion vectors: the MERGE rewrites files and writes
    ``_change_data``, VACUUM alone erases them. Tables with deletion vectors (purged by REORG first) are
    erased in the killed-run tests here, in every mode in ``test_modes`` and, with the change data feed
    too, on S3 in ``test_object_store``, which reads every object's bytes."""
    lake = tmp_path / "lake"
    source = lake / "events"
    ids = make_table(spark, source, CHANGE_DATA_FEED)
    requested = [ids[70], ids[305]]                      # a retained row and a row in neither domain
    requests = requests_table(spark, lake / "requests", requested + ["no-such-id"])
    monkeypatch.setenv("DISTUNLEARN_HASH_KEY", KEY)
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(tmp_path / "lineage.jsonl"))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    before = ids_in(spark, source)

    args = ["unlearn", "--source", str(source), "--in-place", "--purge", "--retention-hours", "0", "--only-writer",
            "--requests", requests, "--hash-ids", "--rule", "likelihood_ratio", "--run-id", "purge-1", "--quiet",
            "--report", str(tmp_path / "report.json"), "--unwanted", DOMAINS["unwanted"],
            "--retained", DOMAINS["retained"]]
    assert main(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    after = ids_in(spark, source)
    deleted = before - after
    assert set(requested) <= deleted
    assert len(deleted) == report["deleted"] + report["deleted_requested"] and report["deleted"] > 0
    assert report["deleted_requested"] == 2 and report["source_version_written"] == 1

    # no deleted id in any Parquet file (data, _change_data) nor anywhere in the log
    for parquet in source.rglob("*.parquet"):
        if "_delta_log" in parquet.parts:
            continue
        assert not deleted & set(pq.read_table(parquet, columns=["id"]).column("id").to_pylist()), parquet
    log_bytes = b"".join(p.read_bytes() for p in files_under(source / "_delta_log"))
    assert not [i for i in deleted if i.encode() in log_bytes]
    assert not (source / "_change_data").exists() or not any((source / "_change_data").iterdir())

    # the manifest holds HMACs of exactly the deleted ids, by reason; no raw id in its files
    manifest = spark.read.format("delta").load(str(source) + "_manifest").collect()
    assert {r["id"] for r in manifest} == {hmac_hex(KEY.encode(), i) for i in deleted}
    assert {r["reason"] for r in manifest if r["id"] in {hmac_hex(KEY.encode(), i) for i in requested}} == {"request"}
    manifest_bytes = b"".join(p.read_bytes() for p in files_under(Path(str(source) + "_manifest")))
    assert not [i for i in deleted if i.encode() in manifest_bytes]

    # every commit of the run carries its id; the ledger has the run; lineage has START and COMPLETE
    history = spark.sql(f"DESCRIBE HISTORY delta.`{source}`").where("version > 0").collect()
    assert history and all(json.loads(h["userMetadata"]) == {"distunlearn_run_id": "purge-1"} for h in history)
    assert {h["operation"] for h in history} >= {"MERGE", "VACUUM START", "VACUUM END"}
    ledger = spark.read.format("delta").load(str(lake / "distunlearn_ledger")).collect()
    assert [(r["run_id"], r["status"], r["deleted_requested"]) for r in ledger] == [("purge-1", "succeeded", 2)]
    events = [json.loads(line) for line in (tmp_path / "lineage.jsonl").read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert events[1]["run"]["facets"]["distunlearn"]["stats"]["alpha"] == pytest.approx(report["alpha"])
    assert events[1]["outputs"][0]["facets"]["version"]["datasetVersion"] == str(report["source_version_written"])
    lineage_text = (tmp_path / "lineage.jsonl").read_text()
    assert not [i for i in deleted if i in lineage_text]

    # a rerun with the same run id changes nothing
    assert main(args) == 0
    assert ids_in(spark, source) == after
    assert spark.sql(f"DESCRIBE HISTORY delta.`{source}`").count() == len(history) + 1

    # verify passes, then fails once a deleted row is back
    capsys.readouterr()
    verify = ["verify", "--source", str(source), "--run-id", "purge-1", "--quiet"]
    assert main(verify) == 0, capsys.readouterr()
    assert capsys.readouterr().out.count("PASS") == 4
    row = spark.createDataFrame([(sorted(deleted)[0], "unwanted", "tampered", [5.0, 5.0, 5.0, 5.0])],
                                "id string, topic string, payload string, embedding array<float>")
    row.write.format("delta").mode("append").save(str(source))
    assert main(verify) == 1
    out = capsys.readouterr()
    assert "FAIL deleted ids absent" in out.out and "verify failed" in out.err


def purge_args(source, run_id, requests=None):
    args = ["unlearn", "--source", str(source), "--in-place", "--purge", "--retention-hours", "0", "--only-writer",
            "--rule", "likelihood_ratio", "--run-id", run_id, *DOMAINS_FLAGS]
    return args + (["--requests", requests] if requests else [])


DOMAINS_FLAGS = ["--unwanted", DOMAINS["unwanted"], "--retained", DOMAINS["retained"]]


# in the order the job reaches them: the plan staged, the MERGE under way, committed but not yet listed, purging
KILL_POINTS = ("writing manifest", "committing the edit", "manifest of the committed deletions", "purge (REORG")


def run_with_crash_images(args, cwd: Path, images: Path) -> dict[str, Path]:
    """Run the command in its own process group; SIGKILL it (JVM included) when the last of ``KILL_POINTS``
    shows on stderr, and at each earlier one take a crash image: freeze the whole group (SIGSTOP), copy
    ``cwd`` (the table, its manifest and ledger) to a folder under ``images`` and let the run go on (SIGCONT).

    A frozen process writes nothing, so the copy holds byte for byte the files a SIGKILL at that moment
    would leave: one driver run gives all three crash states. Returns the folder of every point reached
    (``cwd`` itself for the last)."""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    proc = subprocess.Popen([sys.executable, "-m", "distunlearn", *args, *SMALL_DRIVER_FLAGS], cwd=cwd, env=env,
                            text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    found, pending = {}, list(KILL_POINTS)
    try:
        for line in proc.stderr:
            if pending[0] not in line:
                continue
            marker = pending.pop(0)
            if not pending:
                os.killpg(proc.pid, signal.SIGKILL)
                found[marker] = cwd
                break
            os.killpg(proc.pid, signal.SIGSTOP)
            try:
                found[marker] = Path(shutil.copytree(cwd, images / f"{len(found)}-{marker.split()[0]}"))
            finally:
                os.killpg(proc.pid, signal.SIGCONT)
    finally:
        if pending and proc.poll() is None:                  # stopped early (a failure): no run left behind
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=300)
    return found


@pytest.fixture(scope="module")
def pristine(spark, tmp_path_factory):
    lake = tmp_path_factory.mktemp("pristine")
    ids = make_table(spark, lake / "events", DELETION_VECTORS)
    requests = requests_table(spark, lake / "requests", [ids[75]])
    reference = tmp_path_factory.mktemp("reference")
    shutil.copytree(lake / "events", reference / "events")
    assert main([*purge_args(reference / "events", "uninterrupted", requests), "--quiet"]) == 0
    return dict(lake=lake, requests=requests, expected=ids_in(spark, reference / "events"), all_ids=set(ids))


@pytest.fixture(scope="module")
def crash_states(pristine, tmp_path_factory) -> dict[str, Path]:
    """One driver run on a copy of the pristine table, imaged at the first kill points and SIGKILLed at the
    last: kill point -> folder holding ``events`` (+ manifest and ledger) as the crash left them."""
    run = tmp_path_factory.mktemp("killed-run")
    shutil.copytree(pristine["lake"] / "events", run / "events")
    return run_with_crash_images(purge_args(run / "events", "killed-1", pristine["requests"]), run,
                                 tmp_path_factory.mktemp("crash-images"))


@pytest.mark.reliability("driver kill")
@pytest.mark.parametrize("marker", KILL_POINTS)
def test_killed_run_is_completed_by_a_rerun(spark, pristine, crash_states, marker):
    assert marker in crash_states, f"the run ended before {marker!r}"
    folder = crash_states[marker]
    source = folder / "events"
    args = purge_args(source, "killed-1", pristine["requests"])
    current = ids_in(spark, source)
    assert current in (pristine["all_ids"], pristine["expected"])      # untouched or fully edited
    assert main([*args, "--quiet"]) == 0
    final = ids_in(spark, source)
    state = "untouched" if current == pristine["all_ids"] else "fully edited"
    crash = "SIGKILLed" if marker == KILL_POINTS[-1] else "frozen and its files copied (a SIGKILL's state)"
    # rows the uninterrupted run keeps that the table lacked after the crash or lacks after the rerun
    reliability.record(f"driver crash at '{marker}'", f"driver {crash}: table {state}; the rerun completed",
                       rows_checked=len(pristine["expected"]),
                       rows_lost=len(pristine["expected"] - (current & final)))
    assert final == pristine["expected"]
    ledger = spark.read.format("delta").load(str(folder / "distunlearn_ledger")).collect()
    assert [(r["run_id"], r["status"]) for r in ledger] == [("killed-1", "succeeded")]
    deleted = pristine["all_ids"] - pristine["expected"]
    manifest = {r["id"] for r in spark.read.format("delta").load(f"{source}_manifest").collect()}
    assert manifest == deleted                                    # exactly the committed deletions
    for parquet in source.rglob("*.parquet"):
        if "_delta_log" not in parquet.parts:
            assert not deleted & set(pq.read_table(parquet, columns=["id"]).column("id").to_pylist())


def test_a_run_that_deletes_nothing_verifies(spark, tmp_path, capsys):
    source = tmp_path / "events"
    before = set(make_table(spark, source, {"delta.enableDeletionVectors": "true"}))
    args = ["unlearn", "--source", str(source), "--in-place", "--purge", "--retention-hours", "0", "--only-writer",
            "--alpha-rel", "0", "--rule", "likelihood_ratio", "--run-id", "nothing-1", "--quiet", *DOMAINS_FLAGS]
    assert main(args) == 0, capsys.readouterr().err
    assert ids_in(spark, source) == before
    capsys.readouterr()
    assert main(["verify", "--source", str(source), "--run-id", "nothing-1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 4 and "0 of the run's 0 deleted ids" in out and "no file held a deleted row" in out


def test_a_retention_below_the_tables_needs_the_only_writer_opt_in(spark, tmp_path, capsys):
    """``--retention-hours 0`` without ``--only-writer``: one line naming the opt-in, before any edit."""
    source = tmp_path / "events"
    make_table(spark, source, {})
    version = spark.sql(f"DESCRIBE HISTORY delta.`{source}` LIMIT 1").first()["version"]
    args = ["unlearn", "--source", str(source), "--in-place", "--purge", "--retention-hours", "0",
            "--rule", "likelihood_ratio", "--run-id", "no-opt-in", "--quiet", *DOMAINS_FLAGS]
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--retention-hours 0 is below the 168 hours" in err[0] and "--only-writer" in err[0], err
    assert spark.sql(f"DESCRIBE HISTORY delta.`{source}` LIMIT 1").first()["version"] == version
    assert not (tmp_path / "events_manifest").exists() and not (tmp_path / "distunlearn_ledger").exists()


def test_verify_reads_a_ledger_row_of_the_previous_report_format(spark, tmp_path, monkeypatch, capsys):
    """The run of ``tests/fixtures/report_v1_in_place_purge.json`` (the report the release before
    ``schema_version`` wrote) made again; its ledger row's report set to that fixture, then ``verify``;
    a version newer than this release reads stops ``verify`` with one line naming it."""
    from distunlearn.run_report import RunReport
    from distunlearn.spark.ledger import Ledger
    from distunlearn.spark.table import TableRef
    from test_run_report import old_report

    lake = tmp_path / "lake"
    ids = make_table(spark, lake / "events", CHANGE_DATA_FEED)
    requests = requests_table(spark, lake / "requests", [ids[70], ids[305], "no-such-id"])
    monkeypatch.setenv("DISTUNLEARN_HASH_KEY", KEY)
    args = ["unlearn", "--source", str(lake / "events"), "--in-place", "--purge", "--retention-hours", "0",
            "--only-writer", "--requests", requests, "--hash-ids", "--rule", "likelihood_ratio", "--run-id",
            "old-format-1", "--quiet", *DOMAINS_FLAGS]
    assert main(args) == 0, capsys.readouterr().err
    ledger = Ledger(spark, TableRef.parse(str(lake / "distunlearn_ledger")))
    made, old = ledger.run_report("old-format-1"), old_report(str(lake))
    assert (made.deleted, made.deleted_requested, made.alpha) == (old["deleted"], old["deleted_requested"],
                                                                   pytest.approx(old["alpha"], rel=1e-9))

    ledger.record("old-format-1", "succeeded", old)
    assert "schema_version" not in json.loads(ledger.table.read(spark).first()["report"])
    capsys.readouterr()
    verify = ["verify", "--source", str(lake / "events"), "--run-id", "old-format-1", "--quiet"]
    assert main(verify) == 0, capsys.readouterr()
    assert capsys.readouterr().out.count("PASS") == 4

    ledger.record("old-format-1", "succeeded", {**RunReport.from_dict(old).to_dict(), "schema_version": 3})
    assert main(verify) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "schema version 3; this distunlearn reads versions 1 to 2" in err[0], err
