"""Connect safety: no JVM handle in job code, the session facts the job reads (slots, the scan's split)
taken the same way over a real Connect server, and a run's Delta settings never visible to another user of
the same session."""
from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from conftest import domain_table
from distunlearn.config import UnlearnConfig
from distunlearn.job import run_unlearn
from distunlearn.spark.session import cores, is_connect, run_session, session_conf
from distunlearn.spark.source import TASKS_PER_CORE, Source
from distunlearn.synthetic import gaussian_domains

REPO = Path(__file__).resolve().parents[1]
# also on the second Spark/Delta stack (make test-alt)
pytestmark = pytest.mark.stacks
JVM_HANDLES = re.compile(r"\.rdd\b|_jdf|sparkContext|SparkContext|_jvm|py4j")


def jvm_handles(*folders: str) -> list[str]:
    return [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
            for folder in folders for path in sorted((REPO / folder).rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1) if JVM_HANDLES.search(line)]


def test_job_code_touches_no_jvm_handle():
    assert jvm_handles("distunlearn", "udfs", "jobs") == []
    assert jvm_handles("benchmarks")   # the check can fail: the benchmark reads the classic session's metrics


def test_session_facts_and_the_scan_split_are_read_over_connect(connect_spark, spark, tmp_path, monkeypatch):
    """Slots come from the settings on either session; over Connect a Delta source split into far more
    partitions than it needs is coalesced from DESCRIBE DETAIL alone, to TASKS_PER_CORE per slot."""
    assert is_connect(connect_spark) and not is_connect(spark)
    assert cores(connect_spark) == 4 and cores(spark) == 4            # both set spark.default.parallelism
    with session_conf(spark, {"spark.default.parallelism": "x"}):      # unreadable: the master's threads
        assert cores(spark) == 2
    path = str(tmp_path / "many_files")
    spark.range(0, 400, 1, 1).select("id", F.array(F.col("id").cast("float")).alias("embedding")) \
        .repartition(40).write.format("delta").save(path)
    largest = max(p.stat().st_size for p in Path(path).glob("*.parquet"))
    monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")             # functions build Connect columns
    one_file_each = {"spark.sql.files.maxPartitionBytes": str(largest), "spark.sql.files.openCostInBytes": "1"}
    with session_conf(connect_spark, one_file_each):
        plain = connect_spark.read.format("delta").load(path)
        job = Source.read(connect_spark, path).df
        split = [df.select(F.spark_partition_id().alias("p")).agg(F.max("p") + 1).first()[0] for df in (plain, job)]
    assert split == [40, TASKS_PER_CORE * 4]
    assert job.count() == 400
    with run_session(connect_spark, {"spark.sql.shuffle.partitions": "3"}) as own:
        assert own.client._session_id != connect_spark.client._session_id
        assert own.conf.get("spark.sql.shuffle.partitions") == "3"
        assert connect_spark.conf.get("spark.sql.shuffle.partitions") == "4"


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
                                                  in_place=True, purge=True, retention_hours=0, only_writer=True,
                                                  run_id="shared-1"))
    finally:
        done.set()
        watcher.join()
    assert report.deleted > 0 and report.purge.vacuum
    assert seen == [] and {key: spark.conf.get(key, None) for key in WATCHED} == before
    history = spark.sql(f"DESCRIBE HISTORY delta.`{source}`").where("version > 0").collect()
    assert {h["operation"] for h in history} >= {"MERGE", "REORG", "VACUUM END"}
    assert all(h["userMetadata"] == '{"distunlearn_run_id": "shared-1"}' for h in history)
    assert np.isfinite(report.kl_removal_after)
