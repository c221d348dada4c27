"""The job under ``spark-submit`` on a real standalone cluster (a master and two one-core workers on
127.0.0.1), with the package shipped only by ``--py-files`` (the zip of ``distunlearn bundle``): same
deletion set as local mode.

Part of the default run (``make test``, what CI runs); ``make test-cluster`` runs it alone, and
``-m 'not cluster'`` leaves it out.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import reference
import reliability
from cluster import C1_ONLY, SPARK_SUBMIT, PythonWorkerWatch, StandaloneCluster, isolated_python, spark_env
from conftest import domain_table, write_delta
from distunlearn.cli import main
from distunlearn.config import UnlearnConfig
from distunlearn.job import run_unlearn
from distunlearn.spark.stack import installed_stack

pytestmark = [pytest.mark.cluster, pytest.mark.reliability("cluster")]

REPO = Path(__file__).resolve().parents[1]
DOMAINS = dict(unwanted="topic = 'unwanted'", retained="topic = 'retained'")
RULE = "likelihood_ratio"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with StandaloneCluster(tmp_path_factory.mktemp("standalone"), workers=2) as running:
        yield running
    assert running.group_members() == [], "cluster processes outlived the teardown"


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory, cluster):
    """The executors' and the driver's Python: third-party packages yes, ``distunlearn`` no."""
    python = isolated_python(tmp_path_factory.mktemp("venv") / "bare")
    for i in range(cluster.workers):
        probe = [str(python), "-c", "import distunlearn"]
        failed = subprocess.run(probe, cwd=cluster.work_dir(i), env=spark_env(), capture_output=True, text=True)
        assert failed.returncode != 0 and "No module named 'distunlearn'" in failed.stderr, failed
    ok = subprocess.run([str(python), "-c", "import numpy, pandas, pyarrow, pyspark, delta"], cwd=cluster.root,
                        env=spark_env(), capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    return python


@pytest.fixture(scope="module")
def source(spark, tmp_path_factory):
    """48 unwanted and 160 retained rows, 4 dims, float vectors, in 6 files."""
    rng = np.random.default_rng(17)
    x1 = rng.standard_normal((48, 4)) + np.array([0.9, 0.0, -0.4, 0.2])
    x2 = rng.standard_normal((160, 4))
    table = domain_table(x1, x2, seed=17)
    path = write_delta(spark, table, tmp_path_factory.mktemp("lake") / "events", partitions=6)
    ids1 = np.array(table.column("id").to_pylist()[:48], dtype=object)
    stored = lambda x: x.astype(np.float32).astype(np.float64)          # noqa: E731 - as the float column holds it
    return dict(path=path, x1=stored(x1), x2=stored(x2), ids1=ids1, n=len(table))


def manifest(spark, path) -> list[tuple[int, object]]:
    return sorted((r["rank"], r["id"]) for r in spark.read.format("delta").load(str(path)).collect())


def test_spark_submit_on_a_standalone_cluster_equals_local_mode(spark, cluster, bare_python, source, tmp_path):
    bundle = str(tmp_path / "distunlearn.zip")
    assert main(["bundle", "--out", bundle]) == 0
    output, report = tmp_path / "edited", tmp_path / "report.json"
    argv = [str(SPARK_SUBMIT), "--master", cluster.url, "--properties-file", str(REPO / "conf/spark-defaults.conf"),
            "--packages", installed_stack().delta_package,
            "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
            "--conf", "spark.cores.max=2", "--conf", "spark.executor.cores=1", "--conf", "spark.executor.memory=768m",
            "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
            "--conf", "spark.scheduler.maxRegisteredResourcesWaitingTime=60s",
            "--conf", "spark.sql.shuffle.partitions=4", "--conf", "spark.databricks.delta.snapshotPartitions=2",
            "--conf", "spark.ui.enabled=false",
            "--conf", f"spark.driver.extraJavaOptions={C1_ONLY}", "--conf", f"spark.executor.extraJavaOptions={C1_ONLY}",
            "--py-files", bundle, str(REPO / "jobs/unlearn.py"),
            "--source", source["path"], "--unwanted", DOMAINS["unwanted"], "--retained", DOMAINS["retained"],
            "--rule", RULE, "--order-chunks", "3", "--output", str(output), "--report", str(report)]
    env = spark_env(PYSPARK_PYTHON=str(bare_python), PYSPARK_DRIVER_PYTHON=str(bare_python))
    with PythonWorkerWatch(cluster) as watch:
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    # spark-submit's PythonRunner merges the driver's stderr into its stdout: look at both
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "distunlearn: error" not in log
    assert "statistics pass done" in log and "deleted" in proc.stdout

    # the job ran on the cluster: one executor per worker, each running Python tasks with the bare python
    state = cluster.state()
    apps = state["completedapps"] + state["activeapps"]
    assert len(apps) == 1, apps
    for i in range(cluster.workers):
        executors = list(cluster.work_dir(i).glob("app-*/*"))
        assert executors, f"worker-{i} ran no executor"
        assert any((e / "distunlearn.zip").is_file() for e in executors), f"worker-{i} got no --py-files zip"
    assert watch.seen == {f"worker-{i}": {str(bare_python)} for i in range(cluster.workers)}, watch.seen

    # local mode on the suite's session: same budget, same ids and ranks; and both are the brute force's
    cluster_report = json.loads(report.read_text())
    local_out = tmp_path / "local"
    local_report = run_unlearn(spark, UnlearnConfig(source=source["path"], rule=RULE, order_chunks=3,
                                                    output=str(local_out), **DOMAINS))
    assert cluster_report["deleted"] == local_report.deleted > 0
    cluster_rows = manifest(spark, f"{output}_manifest")
    assert cluster_rows == manifest(spark, f"{local_out}_manifest")
    assert [rank for rank, _ in cluster_rows] == list(range(1, cluster_report["deleted"] + 1))
    f, rows = reference.smallest_budget(source["x1"], source["x2"], source["ids1"], RULE,
                                        cluster_report["alpha"], cluster_report["epsilon"])
    assert f == cluster_report["deleted"]
    assert sorted(i for _, i in cluster_rows) == sorted(source["ids1"][rows].tolist())
    ids = lambda path: {r["id"] for r in spark.read.format("delta").load(str(path)).select("id").collect()}  # noqa: E731
    cluster_ids, local_ids = ids(output), ids(local_out)
    reliability.record("spark-submit, 2 one-core workers", f"success: {f} rows deleted, same manifest as local mode",
                       rows_checked=len(local_ids), rows_lost=len(local_ids - cluster_ids))
    assert len(cluster_ids) == source["n"] - f == len(local_ids)
    assert cluster_ids == local_ids
    for key in ("alpha", "epsilon", "kl_removal_after", "kl_preservation_after"):
        assert cluster_report[key] == pytest.approx(getattr(local_report, key), rel=1e-9), key
