"""Hostile input on real Delta tables, beyond ``test_cli_errors.py``: degenerate domains, exact ties under
every id type, pathological partition layouts, and a Python worker killed mid-task.

Every case must either succeed with the brute-force answer of ``tests/reference.py`` (same budget,
same ids, the edited table exactly the source minus them) or fail with exit 1, one
``distunlearn: error:`` line and nothing written. The cases here are all valid input, so they must
succeed.
"""
from __future__ import annotations

import decimal
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

import reference
import reliability
from cluster import descendants, process_tree
from conftest import SMALL_DRIVER_FLAGS, domain_table, write_delta
from distunlearn.core.rules import RULES
from distunlearn.spark.session import session_conf
from distunlearn.spark.source import PARTITION_BYTES, TASKS_PER_CORE, Source, partition_target, scan_partitions
from test_cli_errors import cli_args, run

UNWANTED, RETAINED = "topic = 'unwanted'", "topic = 'retained'"


# ---------------------------------------------------------------- tables and runs

def two_domains(n_unwanted: int, n_retained: int, dim: int = 3, seed: int = 0, shift: float = 1.2):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_unwanted, dim)) + shift, rng.standard_normal((n_retained, dim))


def table_of(x1, x2, ids: pa.Array | None = None, seed: int = 0) -> pa.Table:
    """``domain_table`` with double vectors (stored exactly), unwanted rows first; ``ids`` replaces its ids."""
    table = domain_table(x1, x2, vector_type="double", seed=seed)
    return table if ids is None else table.set_column(0, "id", ids)


def unwanted_ids(table: pa.Table, n_unwanted: int) -> np.ndarray:
    return np.array(table.column("id").to_pylist()[:n_unwanted], dtype=object)


def read_ids(spark, path) -> list:
    return [r[0] for r in spark.read.format("delta").load(str(path)).select("id").collect()]


def unlearn(spark, capsys, tmp_path, source, name: str, conf: dict | None = None, **flags) -> dict:
    """``distunlearn unlearn`` in-process on the suite's session (with the SQL settings ``conf`` during the
    run only); it must succeed. Returns the report, the manifest's (id, rank) rows and the edited table's ids."""
    output, report_path = tmp_path / name, tmp_path / f"{name}.json"
    with session_conf(spark, conf or {}):
        code, _, err = run(capsys, cli_args(source, output, retained=RETAINED, report=report_path, **flags))
    assert code == 0, f"exit {code}: {err[-2000:]}"
    assert "distunlearn: error" not in err
    manifest = spark.read.format("delta").load(f"{output}_manifest").select("id", "rank").collect()
    return dict(report=json.loads(report_path.read_text()), manifest=sorted((r["rank"], r["id"]) for r in manifest),
                edited=read_ids(spark, output))


def deleted_ids(result: dict) -> list:
    return sorted(i for _, i in result["manifest"])


def assert_brute_force(result: dict, x1, x2, ids1, all_ids, rule: str, case: str | None = None) -> list:
    """Budget and deleted ids equal the brute force's; the edited table is the source minus exactly them.

    With ``case``, recorded as one hostile input of the reliability summary: rows lost are the rows the
    brute force keeps that the edited table lacks.
    """
    report = result["report"]
    f, rows = reference.smallest_budget(x1, x2, ids1, rule, report["alpha"], report["epsilon"])
    assert f is not None and f > 0, "the brute force finds no budget: the case proves nothing"
    expected = sorted(ids1[rows].tolist())
    if case is not None:
        kept = set(all_ids) - set(expected)
        reliability.record(case, f"success: {report['deleted']} of {len(ids1)} unwanted rows deleted "
                                 f"(brute force: {f})",
                           rows_checked=len(all_ids), rows_lost=len(kept - set(result["edited"])))
    assert report["deleted"] == f
    assert deleted_ids(result) == expected
    assert [rank for rank, _ in result["manifest"]] == list(range(1, f + 1))
    assert len(result["edited"]) == len(all_ids) - f
    assert set(result["edited"]) == set(all_ids) - set(expected)
    return expected


# ---------------------------------------------------------------- degenerate domains

@pytest.mark.reliability("hostile input")
def test_one_unwanted_row(spark, capsys, tmp_path):
    """One unwanted row: every rule (auto) ranks a single row over two chunks, one of them empty (the
    default would be one chunk)."""
    x1, x2 = two_domains(1, 25, dim=3, seed=1)
    table = table_of(x1, x2, seed=1)
    source = write_delta(spark, table, tmp_path / "source", partitions=3)
    result = unlearn(spark, capsys, tmp_path, source, "edited", rule="auto", order_chunks=2)
    ids = table.column("id").to_pylist()
    assert_brute_force(result, x1, x2, unwanted_ids(table, 1), ids, "likelihood_ratio", "one unwanted row")
    rules = result["report"]["rules"]
    assert len(rules) == len(RULES) and all(r["feasible"] and r["deleted"] == 1 for r in rules.values()), rules
    assert deleted_ids(result) == [ids[0]]


# every id type, with values that break any lossy handling: adjacent longs above 2^53 (equal as
# doubles), strings whose lexicographic order is not their numeric one (and the empty string),
# decimals that differ in the tenth decimal place at 28 integer digits
TIED_IDS = {
    "long": (pa.int64(), [2**53 + 1, 2**53, 2**53 + 2, -(2**63), 2**63 - 1, -1, 0, 2**53 - 1, 10, 9, -10, 2**62]),
    "string": (pa.string(), ["u9", "u10", "U1", "u1", "", "a", "é1", "10", "9", "o'brien", "back\\slash", "u100"]),
    "decimal": (pa.decimal128(38, 10), [decimal.Decimal(v) for v in (
        "12345678901234567890.0000000002", "12345678901234567890.0000000001", "-0.0000000001", "0",
        "9999999999999999999999999999.9999999999", "-9999999999999999999999999999.9999999999", "0.0000000001",
        "12345678901234567890", "1.5", "1.25", "-1.25", "12345678901234567889.9999999999")]),
}


@pytest.mark.parametrize("id_type, rule", [("long", "likelihood_ratio"), ("string", "distance_to_retained"),
                                           ("decimal", "closest_to_unwanted")])
@pytest.mark.reliability("hostile input")
def test_all_scores_tied_deletes_the_smallest_ids_first(spark, capsys, tmp_path, id_type, rule):
    """Identical unwanted vectors: every score ties, so the deleted rows are the f smallest ids in the id
    type's own order, ranked in that order, also across three ordered chunks."""
    arrow_type, tied = TIED_IDS[id_type]
    n1, n2 = len(tied), 30
    rng = np.random.default_rng(7)
    x1 = np.repeat(rng.standard_normal((1, 3)) + 1.0, n1, axis=0)
    x2 = rng.standard_normal((n2, 3))
    retained = {"long": list(range(1000, 1000 + n2)), "string": [f"r{i}" for i in range(n2)],
                "decimal": [decimal.Decimal(i) / 7 for i in range(1000, 1000 + n2)]}[id_type]
    retained = [decimal.Decimal(v).quantize(decimal.Decimal("1e-10")) for v in retained] \
        if id_type == "decimal" else retained
    table = table_of(x1, x2, pa.array(tied + retained, arrow_type))
    source = write_delta(spark, table, tmp_path / "source", partitions=3)
    result = unlearn(spark, capsys, tmp_path, source, "edited", rule=rule, order_chunks=3, alpha_rel=0.5)

    ids1 = unwanted_ids(table, n1)
    expected = assert_brute_force(result, x1, x2, ids1, table.column("id").to_pylist(), rule,
                                  f"all scores tied, {id_type} ids, {rule}")
    f = result["report"]["deleted"]
    assert 1 < f < n1, f"budget {f} does not split the tied rows: the tie-break is not exercised"
    assert expected == sorted(tied)[:f]
    assert [i for _, i in result["manifest"]] == sorted(tied)[:f]      # rank 1 is the smallest id


# ---------------------------------------------------------------- partition layouts

def partition_layout(spark, path) -> dict[str, list[int]]:
    """For each topic, the sorted ids of the non-empty input partitions holding its rows (as the job reads them)."""
    df = spark.read.format("delta").load(str(path)).withColumn("pid", F.spark_partition_id())
    rows = df.groupBy("topic", "pid").count().collect()
    return {topic: sorted(r["pid"] for r in rows if r["topic"] == topic) for topic in {r["topic"] for r in rows}}


# Every pass of the job runs one task per input partition, and a Python (mapInArrow) task costs PySpark
# 0.15-0.2 s whatever its size: before the job coalesced its input (``distunlearn.spark.source.coalesced``)
# 1,000 partitions took 216-498 s for this one test on a shared two-core machine.
SCATTERED_PARTITIONS = int(os.environ.get("DISTUNLEARN_TEST_PARTITIONS", "1000"))
SCATTERED_ROWS = (14, 26)                     # unwanted, retained: 40 rows, so >= 96% of 1,000 partitions are empty


@pytest.mark.reliability("hostile input")
def test_many_mostly_empty_partitions_give_the_same_set_as_one(spark, capsys, tmp_path):
    """40 rows in at most 40 files (``repartition(40)`` then write), read as at least SCATTERED_PARTITIONS
    byte-range partitions of which at most 40 hold a row: the same deletion set as the same rows in one
    file and one partition, and the job coalesces the scan to a few partitions per core.

    Each row carries a 16 kB payload so the data files, not the Delta log, are what the tiny split size cuts.
    """
    n1, n2 = SCATTERED_ROWS
    x1, x2 = two_domains(n1, n2, dim=3, seed=3, shift=0.9)
    table = table_of(x1, x2, seed=3)
    table = table.set_column(2, "payload", pa.array([os.urandom(8192).hex() for _ in range(len(table))]))
    df = spark.createDataFrame(table)
    scattered, single = str(tmp_path / "scattered"), str(tmp_path / "single")
    df.repartition(len(table)).write.format("delta").save(scattered)
    df.coalesce(1).write.format("delta").save(single)
    assert spark.read.format("delta").load(single).rdd.getNumPartitions() == 1
    ids = table.column("id").to_pylist()

    files = list(Path(scattered).glob("*.parquet"))
    # a row group is read by exactly one byte-range split, so at most this many partitions hold a row
    row_groups = sum(pq.ParquetFile(f).metadata.num_row_groups for f in files if pq.ParquetFile(f).metadata.num_rows)
    assert row_groups <= n1 + n2
    split = sum(p.stat().st_size for p in files) // (SCATTERED_PARTITIONS + 20)
    tiny_splits = {"spark.sql.files.maxPartitionBytes": str(split), "spark.sql.files.openCostInBytes": "0"}
    with session_conf(spark, tiny_splits):
        partitions = spark.read.format("delta").load(scattered).rdd.getNumPartitions()
        job_partitions = Source.read(spark, scattered).df.rdd.getNumPartitions()
    assert partitions >= SCATTERED_PARTITIONS, f"precondition: {partitions} input partitions"
    assert partitions - row_groups >= 0.75 * partitions                 # most partitions are empty
    assert job_partitions == TASKS_PER_CORE * spark.sparkContext.defaultParallelism < partitions
    # the job reads the source as those partitions; the results are read back with the usual split size
    many = unlearn(spark, capsys, tmp_path, scattered, "edited_many", conf=tiny_splits, rule="likelihood_ratio")
    one = unlearn(spark, capsys, tmp_path, single, "edited_one", rule="likelihood_ratio")

    expected = assert_brute_force(one, x1, x2, unwanted_ids(table, n1), ids, "likelihood_ratio")
    assert_brute_force(many, x1, x2, unwanted_ids(table, n1), ids, "likelihood_ratio",
                       f"{partitions:,} input partitions, {partitions - row_groups:,} of them empty")
    assert deleted_ids(many) == expected and many["manifest"] == one["manifest"]
    assert many["report"]["kl_removal_after"] == pytest.approx(one["report"]["kl_removal_after"], rel=1e-9)


def test_coalescing_keeps_a_large_table_split_as_spark_would():
    """The coalesce target never drops below one partition per PARTITION_BYTES of files, nor below
    TASKS_PER_CORE per core; an unknown size never coalesces."""
    assert partition_target(2, 10**6) == 2 * TASKS_PER_CORE
    assert partition_target(2, 100 * PARTITION_BYTES) == 100
    assert partition_target(64, 100 * PARTITION_BYTES) == 64 * TASKS_PER_CORE
    assert partition_target(0, 0) == TASKS_PER_CORE
    assert partition_target(2, None) >= 2**31 - 1
    # Spark's split of a table from its metadata: files packed up to the split size, or cut to it
    assert scan_partitions(5, 270 * 2**20, 2) == 3                      # 5 files of 54 MiB, 128 MiB splits
    assert scan_partitions(40, 40 * 16_000, 4, 600, 0) == 1067          # tiny splits, no open cost
    assert scan_partitions(2000, 2000 * 150_000, 2) == 65               # small files cost their open cost


# each file is its own input partition: the open cost of a file fills a whole partition
FILE_PER_PARTITION = {"spark.sql.files.openCostInBytes": str(128 * 1024 * 1024),
                      "spark.sql.files.maxPartitionBytes": str(128 * 1024 * 1024)}


@pytest.mark.reliability("hostile input")
def test_all_unwanted_rows_in_one_partition_give_the_same_set_as_a_shuffled_layout(spark, capsys, tmp_path):
    x1, x2 = two_domains(24, 60, dim=4, seed=5, shift=0.8)
    table = table_of(x1, x2, seed=5)
    df = spark.createDataFrame(table)
    lumped, shuffled = str(tmp_path / "lumped"), str(tmp_path / "shuffled")
    df.where(UNWANTED).coalesce(1).write.format("delta").save(lumped)          # one file: every unwanted row
    df.where(RETAINED).repartition(3).write.format("delta").mode("append").save(lumped)
    df.repartition(4).write.format("delta").save(shuffled)                      # both domains in every file
    ids = table.column("id").to_pylist()

    with session_conf(spark, FILE_PER_PARTITION):
        layout = partition_layout(spark, lumped)
        assert len(layout["unwanted"]) == 1 and layout["unwanted"][0] not in layout["retained"], layout
        assert len(layout["retained"]) >= 2, layout
        mixed = partition_layout(spark, shuffled)
        assert len(mixed["unwanted"]) >= 2 and set(mixed["unwanted"]) & set(mixed["retained"]), mixed
        one_partition = unlearn(spark, capsys, tmp_path, lumped, "edited_lumped", rule="distance_to_retained",
                                order_chunks=2)
        spread = unlearn(spark, capsys, tmp_path, shuffled, "edited_shuffled", rule="distance_to_retained",
                         order_chunks=2)

    expected = assert_brute_force(spread, x1, x2, unwanted_ids(table, 24), ids, "distance_to_retained")
    assert_brute_force(one_partition, x1, x2, unwanted_ids(table, 24), ids, "distance_to_retained",
                       "every unwanted row in one partition")
    assert deleted_ids(one_partition) == expected and one_partition["manifest"] == spread["manifest"]


# ---------------------------------------------------------------- a Python worker killed mid-task

def python_workers(root: int) -> tuple[set[int], list[int]]:
    """(daemons, workers) among the descendants of ``root``: ``pyspark.daemon`` processes whose parent is
    not a daemon (the JVM's), and the workers they forked (same command line, a daemon as parent)."""
    procs = process_tree()
    forked = {p for p in descendants(root, procs) if "pyspark.daemon" in procs[p][1]}
    daemons = {p for p in forked if procs[p][0] not in forked}
    return daemons, sorted(p for p in forked if procs[p][0] in daemons)


def gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie awaiting its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


class StderrWatcher:
    """Collects a process's stderr lines in a thread and signals when a line contains a marker."""

    def __init__(self, stream, markers: tuple[str, ...]):
        self.lines: list[str] = []
        self.seen = {m: threading.Event() for m in markers}
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line)
            for marker, event in self.seen.items():
                if marker in line:
                    event.set()

    @property
    def text(self) -> str:
        return "".join(self.lines)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process, or None once it has exited."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in "ZX":
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kill_one_worker(proc: subprocess.Popen, watcher: StderrWatcher, deadline: float,
                    busy_seconds: float = 0.1) -> int | None:
    """Once the statistics pass has started, SIGKILL the first Python worker forked under ``proc`` as soon
    as it has used ``busy_seconds`` of CPU.

    A worker is forked when a task needs one, and its first task starts by importing numpy, pandas and
    pyarrow (several tenths of a second of CPU): killing it at 0.1 s lands inside that task, after the
    fork handshake (a worker killed before the handshake makes Spark restart the daemon instead of
    failing a task). Returns the killed pid, or None if no worker showed up before the first selection ended.
    """
    if not watcher.seen["statistics pass ..."].wait(timeout=max(deadline - time.monotonic(), 1)):
        return None
    victim = None
    done = watcher.seen["selection, likelihood_ratio done"]
    while time.monotonic() < deadline and proc.poll() is None and not done.is_set():
        if victim is None:
            workers = python_workers(proc.pid)[1]
            victim = workers[0] if workers else None
        if victim is not None:
            used = cpu_seconds(victim)
            if used is None:
                victim = None                                        # gone already: wait for the next one
            elif used >= busy_seconds:
                os.kill(victim, signal.SIGKILL)
                return victim
        time.sleep(0.005)
    return None


def embeddings_table(spark, path, rows: int, dim: int, partitions: int) -> str:
    """A larger table made in the JVM: every tenth row unwanted (mean shifted by 0.4), float vectors."""
    unwanted = F.col("id") % 10 == 0
    vec = F.array(*[(F.randn(100 + k) + F.when(unwanted, F.lit(0.4)).otherwise(F.lit(0.0))).cast("float")
                    for k in range(dim)])
    spark.range(0, rows, 1, partitions).select(
        (F.col("id") * 7 + 3).alias("id"), F.when(unwanted, "unwanted").otherwise("retained").alias("topic"),
        vec.alias("embedding")).write.format("delta").save(str(path))
    return str(path)


@pytest.mark.reliability("worker kill")
def test_killed_python_worker_is_retried_and_gives_the_same_set(spark, capsys, tmp_path):
    source = embeddings_table(spark, tmp_path / "source", rows=20_000, dim=8, partitions=4)
    undisturbed = unlearn(spark, capsys, tmp_path, source, "undisturbed", rule="likelihood_ratio")
    assert undisturbed["report"]["deleted"] > 0

    output = tmp_path / "killed"
    args = [sys.executable, "-m", "distunlearn", "unlearn", "--source", source, "--unwanted", UNWANTED,
            "--retained", RETAINED, "--rule", "likelihood_ratio", "--output", str(output),
            *SMALL_DRIVER_FLAGS, "--master", "local[2,4]",               # up to 4 attempts per task
            "--verbose"]                                                   # Spark's warnings on stderr
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, DISTUNLEARN_SPARK_LOG_LEVEL="WARN")
    env.pop("PYSPARK_GATEWAY_PORT", None)
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        watcher = StderrWatcher(proc.stderr, ("statistics pass ...", "selection, likelihood_ratio done"))
        victim = kill_one_worker(proc, watcher, time.monotonic() + 240)
        out = proc.stdout.read()
        code = proc.wait(timeout=300)
        watcher.thread.join(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    assert victim is not None, "no Python worker was found to kill:\n" + watcher.text[-3000:]
    assert gone(victim), f"worker {victim} survived SIGKILL"
    assert code == 0, watcher.text[-3000:]
    lost = [line for line in watcher.text.splitlines() if "Lost task" in line]
    assert lost, "the kill did not fail a running task (no 'Lost task' warning):\n" + watcher.text[-3000:]
    assert any("Python worker exited unexpectedly" in line or "crashed" in line for line in lost), lost
    assert "deleted" in out
    killed = spark.read.format("delta").load(f"{output}_manifest").select("id", "rank").collect()
    edited = read_ids(spark, output)
    reliability.record("Python worker killed in the statistics pass",
                       f"success after Spark's retry ({len(lost)} lost task(s)); same manifest and edited table",
                       rows_checked=len(undisturbed["edited"]), rows_lost=len(set(undisturbed["edited"]) - set(edited)))
    assert sorted((r["rank"], r["id"]) for r in killed) == undisturbed["manifest"]
    assert sorted(edited) == sorted(undisturbed["edited"])
