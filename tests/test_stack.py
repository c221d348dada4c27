"""The Spark/Delta stack: the table of supported combinations against the installed wheels, the jars a local
session asks for, VACUUM's retention on every Delta line, and an install beside a Spark that is already there."""
from __future__ import annotations

import os
import shutil
import subprocess
import venv
from importlib import metadata
from pathlib import Path

import pyspark
import pytest

from distunlearn.errors import DistunlearnError
from distunlearn.spark.purge import purge
from distunlearn.spark.stack import (SPARK_LINES, TESTED, find_line, installed_stack, main as stack_main,
                                     shipped_hadoop, stack_for, version_tuple)
from distunlearn.spark.table import TableRef

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.stacks
def test_installed_pair_is_a_tested_row_of_the_table_and_its_jars_follow_it(spark):
    stack = installed_stack()
    assert (stack.pyspark, stack.delta) == (pyspark.__version__, metadata.version("delta-spark"))
    assert stack.tested and (stack.pyspark, stack.delta) in TESTED
    # the Hadoop the wheel ships is the one the table names for its line, and the connectors follow it
    assert shipped_hadoop() == stack.line.hadoop == stack.hadoop
    assert stack.object_store_packages["s3a"] == f"org.apache.hadoop:hadoop-aws:{stack.hadoop}"
    assert stack.object_store_packages["abfss"] == f"org.apache.hadoop:hadoop-azure:{stack.hadoop}"
    # the running session has exactly these jars: Delta's for this line, and S3A's for this Hadoop
    packages = spark.conf.get("spark.jars.packages").split(",")
    assert packages[0] == stack.delta_package and stack.object_store_packages["s3a"] in packages
    assert spark.version == stack.pyspark


def test_delta_artifact_carries_the_spark_line_from_delta_4_1():
    assert stack_for("4.0.1", "4.0.1").delta_package == "io.delta:delta-spark_2.13:4.0.1"
    assert stack_for("4.0.1", "4.4.0").delta_package == "io.delta:delta-spark_4.0_2.13:4.4.0"
    assert stack_for("4.1.1", "4.3.1").delta_package == "io.delta:delta-spark_4.1_2.13:4.3.1"
    assert stack_for("4.2.0", "4.4.0").delta_package == "io.delta:delta-spark_4.2_2.13:4.4.0"
    assert stack_for("4.1.1", "4.3.1").object_store_packages["s3a"] == "org.apache.hadoop:hadoop-aws:3.4.2"
    assert stack_for("4.2.0", "4.4.0").object_store_packages["s3a"] == "org.apache.hadoop:hadoop-aws:3.5.0"
    assert not stack_for("4.0.1", "4.0.1").vacuum_ignores_retain and stack_for("4.1.0", "4.1.0").vacuum_ignores_retain
    assert [p for p, _ in TESTED] == sorted({p for p, _ in TESTED}) and all(find_line(p, d) for p, d in TESTED)


@pytest.mark.parametrize("pair", [("4.0.0", "4.0.1"), ("4.1.1", "4.0.1"), ("4.2.0", "4.3.1"), ("4.3.0", "4.4.0"),
                                  ("4.2.0", "4.4.1")])
def test_an_unsupported_pair_is_one_line_naming_the_supported(pair):
    with pytest.raises(DistunlearnError) as info:
        find_line(*pair)
    text = str(info.value)
    assert "\n" not in text and f"pyspark {pair[0]} with delta-spark {pair[1]} is not a supported" in text
    assert all(f"Spark {line.spark}" in text for line in SPARK_LINES)


def test_stack_command_prints_packages_and_a_pom(capsys):
    assert stack_main(["--pyspark", "4.1.1", "--delta", "4.3.1", "--packages", "s3a", "gs"]) == 0
    assert capsys.readouterr().out.strip() == ("io.delta:delta-spark_4.1_2.13:4.3.1,org.apache.hadoop:hadoop-aws:3.4.2,"
                                               "com.google.cloud.bigdataoss:gcs-connector:hadoop3-2.2.25")
    assert stack_main(["--pom"]) == 0
    pom = capsys.readouterr().out
    assert f"<version>{installed_stack().delta}</version>" in pom
    assert stack_main(["--pyspark", "4.3.0", "--delta", "4.4.0", "--packages"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("distunlearn: error: pyspark 4.3.0 with delta-spark 4.4.0 is not a supported") and "\n" not in err


@pytest.mark.stacks
def test_vacuum_retains_the_hours_asked_for_not_the_tables_property(spark, tmp_path):
    """The table keeps removed files 0 hours; a purge that asks for 1000 keeps them (Delta 4.1+ would use the
    table's 0 unless told otherwise) and says so; the table's property is left as it was."""
    path = tmp_path / "t"
    spark.range(40).repartition(2).write.format("delta").save(str(path))
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.deletedFileRetentionDuration' = 'interval 0 hours')")
    spark.range(40, 60).repartition(2).write.format("delta").mode("overwrite").save(str(path))   # removes 2 files
    data = lambda: sorted(p.name for p in path.glob("*.parquet"))   # noqa: E731
    before = data()
    assert len(before) == 4
    table = TableRef.parse(str(path))

    kept = purge(spark, table, retention_hours=1000, run_id="keep", after_version=2, id_col="id")
    assert data() == before and kept.vacuum["numDeletedFiles"] == 0
    assert (kept.retention_applied_hours, kept.retention_applied_from) == (1000, "RETAIN")
    properties = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["properties"]
    assert properties["delta.deletedFileRetentionDuration"] == "interval 0 hours"

    erased = purge(spark, table, retention_hours=0, run_id="erase", after_version=4, id_col="id", only_writer=True)
    assert len(data()) == 2 and erased.vacuum["numDeletedFiles"] == 2
    assert (erased.retention_applied_hours, erased.retention_applied_from) == (0, "RETAIN")


# A Spark other than either tested pair, installed before distunlearn (override: pyspark,delta-spark).
BESIDE = os.environ.get("DISTUNLEARN_TEST_BESIDE_STACK", "4.1.1,4.3.1").split(",")


def _run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=1200, **kwargs)


def test_install_beside_an_installed_spark_keeps_it_and_runs_on_it(tmp_path):
    """A venv that already runs pyspark (and the delta-spark of its line): installing distunlearn, base and
    [connect], leaves that pyspark alone; the demo then runs there on the jars of that Spark line; without any
    pyspark the command says in one line what to install."""
    root = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(root)
    python, pip = str(root / "bin" / "python"), [str(root / "bin" / "python"), "-m", "pip", "--quiet",
                                                 "--disable-pip-version-check"]
    version = lambda dist="pyspark": _run([python, "-c", f"from importlib.metadata import version; "  # noqa: E731
                                                         f"print(version({dist!r}))"]).stdout.strip()
    step = _run([*pip, "install", f"pyspark=={BESIDE[0]}", f"delta-spark=={BESIDE[1]}"])
    assert step.returncode == 0, step.stderr[-2000:]
    assert version() == BESIDE[0]
    source = tmp_path / "src"      # pip builds in the tree it installs: a copy, so the checkout stays as it is
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "*.egg-info", "build", "dist", "lakehouse",
                                                                "__pycache__", "docs", "notebooks", "benchmarks"))
    for target in (str(source), f"{source}[connect]"):
        step = _run([*pip, "install", target])
        assert step.returncode == 0, step.stderr[-2000:]
        assert version() == BESIDE[0], target
    assert version("delta-spark") == BESIDE[1]

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYSPARK_GATEWAY_PORT",
                                                             "PYSPARK_GATEWAY_SECRET", "SPARK_HOME", "SPARK_REMOTE")}
    env["DISTUNLEARN_LOG_DIR"] = str(tmp_path / "logs")
    work = tmp_path / "work"
    work.mkdir()
    # the wheel maps the top-level udfs/ folder to distunlearn.udfs (no symlink) and carries every subpackage
    where = _run([python, "-c", "import distunlearn.udfs.moments, distunlearn.erasure.run, distunlearn.spark.purge; "
                                "print(distunlearn.udfs.__file__)"], cwd=work, env=env)
    assert where.returncode == 0, where.stderr[-2000:]
    assert where.stdout.strip() == str(next(root.glob("lib/python*/site-packages/distunlearn/udfs/__init__.py")))
    demo = _run([str(root / "bin" / "distunlearn"), "demo", "--lakehouse", str(work / "lake"), "--quiet",
                 "--rule", "likelihood_ratio", "--master", "local[2]", "--spark-conf", "spark.ui.enabled=false",
                 "--spark-conf", "spark.sql.shuffle.partitions=4"], cwd=work, env=env)
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-3000:]
    expected = stack_for(*BESIDE)
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log"))
    group, artifact, release = expected.delta_package.split(":")
    assert f"{group}#{artifact};{release}" in logs, logs[-3000:]      # Ivy resolved the jar of this Spark line
    assert (work / "lake" / "demo_edited" / "_delta_log").is_dir()

    step = _run([*pip, "uninstall", "--yes", "pyspark"])
    assert step.returncode == 0, step.stderr[-2000:]
    for argv in ([str(root / "bin" / "distunlearn"), "demo"], [python, "-m", "distunlearn", "demo"]):
        missing = _run(argv, cwd=work, env=env)
        assert missing.returncode == 1 and missing.stdout == ""
        assert missing.stderr.startswith("distunlearn: error: no pyspark is importable")
        assert missing.stderr.count("\n") == 1 and "distunlearn[local]" in missing.stderr


def test_docs_table_and_the_local_extra_mirror_the_table_in_code():
    import tomllib

    rows = [line.split("|")[1:-1] for line in (REPO / "docs" / "operations.md").read_text().splitlines()
            if line.startswith("| 4.")]
    assert [(r[0].strip(), r[2].strip(), tuple(v.strip() for v in r[3].split(","))) for r in rows] == \
        [(line.spark, line.hadoop, line.delta) for line in SPARK_LINES]
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pyspark_versions, delta_versions = zip(*TESTED, BESIDE)
    low, high = (lambda v: min(v, key=version_tuple)), (lambda v: max(v, key=version_tuple))
    assert extras["local"] == [f"pyspark>={low(pyspark_versions)},<={high(pyspark_versions)}",
                               f"delta-spark>={low(delta_versions)},<={high(delta_versions)}"]
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in dependencies + extras["connect"] if d.startswith(("pyspark", "delta-spark"))]
