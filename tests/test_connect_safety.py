"""Connect safety: no JVM handle outside the classic-only helpers, their fallbacks over a real Connect
server, and a run's Delta settings never visible to another user of the same session."""
from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from conftest import domain_table
from distunlearn.config import UnlearnConfig
from distunlearn.job import run_unlearn
from distunlearn.spark import classic
from distunlearn.spark.session import cores, run_session
from distunlearn.spark.source import coalesced
from distunlearn.synthetic import gaussian_domains

REPO = Path(__file__).resolve().parents[1]
JVM_HANDLES = re.compile(r"\.rdd\b|_jdf|sparkContext|_jvm")


def test_job_code_touches_no_jvm_handle_outside_the_classic_helpers():
    hits = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
            for folder in ("distunlearn", "udfs", "jobs") for path in sorted((REPO / folder).rglob("*.py"))
            if path.name != "classic.py"
            for n, line in enumerate(path.read_text().splitlines(), 1) if JVM_HANDLES.search(line)]
    assert hits == []
    assert JVM_HANDLES.search((REPO / "distunlearn" / "spark" / "classic.py").read_text())  # the check can fail


def test_classic_helpers_fall_back_over_connect(connect_spark, spark, monkeypatch):
    monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
    remote = connect_spark.range(0, 1000, numPartitions=40)
    assert classic.is_connect(connect_spark) and not classic.is_connect(spark)
    assert classic.num_partitions(remote) is None and classic.plan_size_bytes(remote) is None
    assert classic.default_parallelism(connect_spark) is None
    assert cores(connect_spark) == 4                       # the server's spark.default.parallelism
    assert coalesced(remote) is remote                     # unknown layout: the scan is left as it is
    classic.set_log_level(connect_spark, "ERROR")          # a no-op, not an error
    with run_session(connect_spark, {"spark.sql.shuffle.partitions": "3"}) as own:
        assert own.client._session_id != connect_spark.client._session_id
        assert own.conf.get("spark.sql.shuffle.partitions") == "3"
        assert connect_spark.conf.get("spark.sql.shuffle.partitions") == "4"
    # and the classic path takes the handles it is there for
    local = spark.range(0, 1000, numPartitions=40)
    assert classic.num_partitions(local) == 40 and classic.plan_size_bytes(local) > 0


WATCHED = ("spark.databricks.delta.commitInfo.userMetadata", "spark.databricks.delta.write.txnAppId",
           "spark.databricks.delta.write.txnVersion", "spark.databricks.delta.retentionDurationCheck.enabled",
           "spark.sql.autoBroadcastJoinThreshold", "spark.databricks.delta.vacuum.logging.enabled")


def test_a_concurrent_user_of_the_session_never_sees_the_runs_settings(spark, tmp_path):
    x1, x2 = gaussian_domains(40, 120, 3, shift=1.0, seed=8)
    source = str(tmp_path / "events")
    spark.createDataFrame(domain_table(x1, x2, seed=2)).repartition(2).write.format("delta") \
        .option("delta.enableDeletionVectors", "true").save(source)
    before = {key: spark.conf.get(key, None) for key in WATCHED}
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            now = {key: spark.conf.get(key, None) for key in WATCHED}
            if now != before:
                seen.append(now)
            done.wait(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        report = run_unlearn(spark, UnlearnConfig(source=source, unwanted="topic = 'unwanted'", rule="likelihood_ratio",
                                                  in_place=True, purge=True, retention_hours=0, run_id="shared-1"))
    finally:
        done.set()
        watcher.join()
    assert report["deleted"] > 0 and report["purge"]["vacuum"]
    assert seen == [] and {key: spark.conf.get(key, None) for key in WATCHED} == before
    history = spark.sql(f"DESCRIBE HISTORY delta.`{source}`").where("version > 0").collect()
    assert {h["operation"] for h in history} >= {"MERGE", "REORG", "VACUUM END"}
    assert all(h["userMetadata"] == '{"distunlearn_run_id": "shared-1"}' for h in history)
    assert np.isfinite(report["kl_removal_after"])
