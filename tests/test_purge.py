"""In-place purges on real Delta tables: physical erasure, requests, hashing, idempotency, verify."""
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
from pyspark.sql import functions as F

from conftest import domain_table
from distunlearn.cli import main
from distunlearn.config import UnlearnConfig
from distunlearn.job import run_unlearn
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


FEATURES = {
    "deletion-vectors": {"delta.enableDeletionVectors": "true"},
    "change-data-feed": {"delta.enableChangeDataFeed": "true"},
}


@pytest.mark.parametrize("features", FEATURES.values(), ids=FEATURES.keys())
def test_in_place_purge_erases_physically(spark, tmp_path, monkeypatch, capsys, features):
    lake = tmp_path / "lake"
    source = lake / "events"
    ids = make_table(spark, source, features)
    requested = [ids[70], ids[305]]                      # a retained row and a row in neither domain
    requests = requests_table(spark, lake / "requests", requested + ["no-such-id"])
    monkeypatch.setenv("DISTUNLEARN_HASH_KEY", KEY)
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(tmp_path / "lineage.jsonl"))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    before = ids_in(spark, source)

    args = ["unlearn", "--source", str(source), "--in-place", "--purge", "--retention-hours", "0",
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
    args = ["unlearn", "--source", str(source), "--in-place", "--purge", "--retention-hours", "0",
            "--rule", "likelihood_ratio", "--run-id", run_id, *DOMAINS_FLAGS]
    return args + (["--requests", requests] if requests else [])


DOMAINS_FLAGS = ["--unwanted", DOMAINS["unwanted"], "--retained", DOMAINS["retained"]]


def run_until(args, marker: str, cwd) -> bool:
    """Run the command in its own process group and SIGKILL it (JVM included) when ``marker`` shows on stderr."""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    proc = subprocess.Popen([sys.executable, "-m", "distunlearn", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    killed = False
    for line in proc.stderr:
        if marker in line:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
    proc.wait(timeout=300)
    return killed


@pytest.fixture(scope="module")
def pristine(spark, tmp_path_factory):
    lake = tmp_path_factory.mktemp("pristine")
    ids = make_table(spark, lake / "events", FEATURES["deletion-vectors"])
    requests = requests_table(spark, lake / "requests", [ids[75]])
    reference = tmp_path_factory.mktemp("reference")
    shutil.copytree(lake / "events", reference / "events")
    assert main([*purge_args(reference / "events", "uninterrupted", requests), "--quiet"]) == 0
    return dict(lake=lake, requests=requests, expected=ids_in(spark, reference / "events"), all_ids=set(ids))


@pytest.mark.parametrize("marker", ["writing manifest", "committing the edit", "purge (REORG"])
def test_killed_run_is_completed_by_a_rerun(spark, tmp_path, pristine, marker):
    source = tmp_path / "events"
    shutil.copytree(pristine["lake"] / "events", source)
    args = purge_args(source, "killed-1", pristine["requests"])
    assert run_until(args, marker, tmp_path), f"the run ended before {marker!r}"
    current = ids_in(spark, source)
    assert current in (pristine["all_ids"], pristine["expected"])      # untouched or fully edited
    assert main([*args, "--quiet"]) == 0
    assert ids_in(spark, source) == pristine["expected"]
    ledger = spark.read.format("delta").load(str(tmp_path / "distunlearn_ledger")).collect()
    assert [(r["run_id"], r["status"]) for r in ledger] == [("killed-1", "succeeded")]
    deleted = pristine["all_ids"] - pristine["expected"]
    for parquet in source.rglob("*.parquet"):
        if "_delta_log" not in parquet.parts:
            assert not deleted & set(pq.read_table(parquet, columns=["id"]).column("id").to_pylist())


def test_concurrent_append_replans_then_gives_up_with_exit_3(spark, tmp_path, monkeypatch, capsys):
    import distunlearn.job as job

    source = tmp_path / "events"
    make_table(spark, source, {})
    plan = job.plan_unlearning
    appended = []

    def plan_then_append(spark_, config, run_id):
        result = plan(spark_, config, run_id)
        if len(appended) < appends_allowed:
            new_id = f"late-{len(appended)}"
            spark.createDataFrame([(new_id, "retained", "late", [0.0, 0.0, 0.0, 0.0])],
                                  "id string, topic string, payload string, embedding array<float>") \
                .write.format("delta").mode("append").save(str(source))
            appended.append(new_id)
        return result

    monkeypatch.setattr(job, "plan_unlearning", plan_then_append)
    appends_allowed = 1
    report = run_unlearn(spark, UnlearnConfig(source=str(source), in_place=True, rule="likelihood_ratio",
                                              run_id="conflict-1", **DOMAINS))
    assert report["source_version"] == 1 and report["source_version_written"] == 2
    assert "late-0" in ids_in(spark, source)

    appends_allowed = 10
    before = spark.sql(f"DESCRIBE HISTORY delta.`{source}`").where("operation = 'MERGE'").count()
    code = main(["unlearn", "--source", str(source), "--in-place", "--rule", "likelihood_ratio", "--run-id",
                 "conflict-2", "--max-retries", "1", "--quiet", *DOMAINS_FLAGS])
    assert code == 3
    assert "kept changing" in capsys.readouterr().err.strip().splitlines()[-1]
    assert spark.sql(f"DESCRIBE HISTORY delta.`{source}`").where("operation = 'MERGE'").count() == before
