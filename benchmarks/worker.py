"""The Spark worker process: one session, a warm-up, then the measurements of one table."""
from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.request
from pathlib import Path

from baselines import spark_scans
from common import UNWANTED_PREDICATE, log, run_child
from data import table_bytes, table_files
from measure import MemorySampler, SparkProbe, merge_metrics


def _session(args, sampler: MemorySampler, work: Path):
    """The job's local (or standalone) session with the UI on; start-up timed and sampled."""
    t0 = time.perf_counter()
    from pyspark.sql import functions as F  # noqa: F401 - imported here so that the import time counts it

    from distunlearn.job import run_unlearn  # noqa: F401
    from distunlearn.spark.session import get_session

    import_seconds = time.perf_counter() - t0
    start = time.perf_counter()
    cluster_conf = {} if args.master.startswith("local") else {
        "spark.executor.memory": "768m", "spark.executor.cores": "1", "spark.cores.max": "2"}
    spark = get_session("distunlearn-benchmark", master=args.master, conf={
        **cluster_conf,
        "spark.ui.enabled": "true",
        "spark.ui.port": "0",
        "spark.ui.retainedJobs": "100000",
        "spark.ui.retainedStages": "100000",
        "spark.sql.ui.retainedExecutions": "100000",
        "spark.sql.warehouse.dir": str(work / "warehouse"),
    })
    spark.range(1).count()
    startup = {"seconds": round(time.perf_counter() - start, 2), "import_seconds": round(import_seconds, 2),
               "memory": sampler.take(), "ui": spark.sparkContext.uiWebUrl,
               "default_parallelism": spark.sparkContext.defaultParallelism,
               "conf": {k: spark.conf.get(k, None) for k in (
                   "spark.driver.memory", "spark.sql.shuffle.partitions",
                   "spark.sql.execution.arrow.maxRecordsPerBatch", "spark.sql.files.maxPartitionBytes",
                   "spark.sql.adaptive.enabled")}}
    log(f"Spark session up in {startup['seconds']} s (UI {spark.sparkContext.uiWebUrl})")
    runtime = spark._jvm.java.lang.Runtime.getRuntime()
    executors_url = f"{spark.sparkContext.uiWebUrl}/api/v1/applications/{spark.sparkContext.applicationId}/executors"

    def jvm_sample() -> dict:
        total, free = runtime.totalMemory(), runtime.freeMemory()
        with urllib.request.urlopen(executors_url, timeout=10) as resp:
            blocks = sum(e.get("memoryUsed", 0) + e.get("diskUsed", 0) for e in json.loads(resp.read()))
        return {"jvm_heap_used_mib": (total - free) / 2**20, "jvm_heap_committed_mib": total / 2**20,
                "block_storage_mib": blocks / 2**20}

    sampler.spark_probe = jvm_sample
    return spark, startup


def _one_partition_per_file(spark, table: str) -> dict:
    """Session settings under which the scan gets one partition per file: no split larger than the
    largest file and almost no open cost, so that no two files share a partition."""
    import os

    conf = {"spark.sql.files.maxPartitionBytes": str(max(os.path.getsize(f) for f in table_files(table))),
            "spark.sql.files.openCostInBytes": "1"}
    for key, value in conf.items():
        spark.conf.set(key, value)
    return conf


def _no_coalescing() -> str:
    """The job's scan of the source is not coalesced (``coalesced`` is the identity), as for a DataFrame
    source split that finely."""
    import distunlearn.spark.source as source

    source.coalesced = lambda df, detail: df
    return "distunlearn.spark.source.coalesced replaced by the identity in this process (as for a DataFrame source)"


def _baseline_runs(args, work: Path) -> tuple[dict, dict]:
    """One run each of the checked and the lean numpy baselines (fresh processes, this JVM idle)."""
    runs = {}
    for mode, name in (("--numpy-worker", "numpy"), ("--lean-numpy-worker", "lean_numpy")):
        path = work / f"{name}_{args.rows}_likelihood_ratio.json"
        path.unlink(missing_ok=True)
        runs[name] = run_child(args, mode, args.table, args.rows, path,
                               ["--rule", "likelihood_ratio", "--seed", str(args.seed)], args.timeout)
    return runs["numpy"], runs["lean_numpy"]


def _fastest(tries: list[dict]) -> dict:
    fastest = min(tries, key=lambda m: m.get("seconds", float("inf")))
    return {**fastest, "all_seconds": [m.get("seconds") for m in tries]}


def spark_worker(args) -> None:
    import logging

    import distunlearn.progress  # noqa: F401 - the phase lines go to our log

    logging.basicConfig(level=logging.INFO, format="    %(message)s", stream=sys.stdout)
    for noisy in ("py4j", "py4j.clientserver", "py4j.java_gateway"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    sampler = MemorySampler(args.sample_interval)
    sampler.start()
    work = Path(args.work_dir)
    result: dict = {"rows": args.rows, "table": args.table, "measurements": {}}
    if args.no_coalesce:
        result["coalescing"] = _no_coalescing()
    spark, result["startup"] = _session(args, sampler, work)

    from pyspark.sql import functions as F

    from distunlearn.config import UnlearnConfig
    from distunlearn.job import run_unlearn

    size = table_bytes(args.table)
    probe = SparkProbe(spark, sampler, args.table, size)
    result["table_bytes"] = size
    result["table_files"] = len(table_files(args.table))

    def plan(source: str, rule: str):
        return lambda: _summary(run_unlearn(spark, UnlearnConfig(source=source, unwanted=UNWANTED_PREDICATE,
                                                                 rule=rule, dry_run=True)))

    def apply(source: str, **kwargs):
        return lambda: _summary(run_unlearn(spark, UnlearnConfig(
            source=source, unwanted=UNWANTED_PREDICATE, rule="likelihood_ratio", **kwargs)))

    # warm-up on a tiny table: JIT, class loading, Python workers; same for every size
    warm = time.perf_counter()
    plan(args.warmup_table, "likelihood_ratio")()
    spark.read.format("delta").load(args.warmup_table).select(F.sum(F.size("embedding"))).collect()
    result["warmup_seconds"] = round(time.perf_counter() - warm, 2)
    sampler.take()
    if args.file_partitions:
        result["file_partition_conf"] = _one_partition_per_file(spark, args.table)
    result["scan_partitions"] = spark.read.format("delta").load(args.table).rdd.getNumPartitions()
    Path(args.json).write_text(json.dumps(result, indent=1, default=str))  # kept should a measurement fail

    runs = {"plan_likelihood_ratio": plan(args.table, "likelihood_ratio"), "plan_auto": plan(args.table, "auto"),
            **spark_scans(spark.read.format("delta").load(args.table))}
    for name in args.measure.split(","):
        repeats = args.repeats if name.startswith("scan") or name == "plan_likelihood_ratio" else 1
        if name in runs:
            tries, numpy_tries, lean_tries = [], [], []
            for i in range(repeats):
                tries.append(probe.measure(name if i == 0 else f"{name}#{i + 1}", runs[name]))
                if name == "plan_likelihood_ratio" and args.numpy_interleaved:
                    # the baselines run between the plan's repeats (this JVM idle), so all see the same load
                    numpy_run, lean_run = _baseline_runs(args, work)
                    numpy_tries.append(numpy_run)
                    lean_tries.append(lean_run)
            best = min(tries, key=lambda m: m["seconds"])
            result["measurements"][name] = {
                **best, "all_seconds": [m["seconds"] for m in tries],
                "memory": {k: max(m["memory"][k] for m in tries) for k in tries[0]["memory"]}}
            if numpy_tries:
                result["numpy_likelihood_ratio"] = _fastest(numpy_tries)
                result["lean_numpy_likelihood_ratio"] = _fastest(lean_tries)
        elif name == "apply_output":
            out = work / f"edited_{args.rows}"
            for p in (out, Path(str(out) + "_manifest"), out.parent / "distunlearn_ledger"):
                shutil.rmtree(p, ignore_errors=True)
            result["measurements"][name] = probe.measure(name, apply(args.table, output=str(out)))
            shutil.rmtree(out, ignore_errors=True)
        elif name == "apply_in_place_dv":
            copy = work / f"inplace_{args.rows}"
            for p in (copy, Path(str(copy) + "_manifest"), copy.parent / "distunlearn_ledger"):
                shutil.rmtree(p, ignore_errors=True)
            shutil.copytree(args.table, copy)
            t = time.perf_counter()
            spark.sql(f"ALTER TABLE delta.`{copy}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
            alter = round(time.perf_counter() - t, 2)
            m = probe.measure(name, apply(str(copy), in_place=True))
            m["enable_deletion_vectors_seconds"] = alter
            m["merge_metrics"] = merge_metrics(spark, str(copy))
            result["measurements"][name] = m
            shutil.rmtree(copy, ignore_errors=True)
        else:
            raise SystemExit(f"unknown measurement {name}")
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    sampler.stop_event.set()
    spark.stop()


def _summary(report) -> dict:
    keys = ("rule", "n_unwanted", "n_retained", "dims", "kappa", "alpha", "epsilon", "deleted", "feasible",
            "kl_removal_after", "kl_preservation_after", "output_version", "source_version_written")
    out = {k: getattr(report, k) for k in keys}
    out["rules"] = {r: v.deleted for r, v in report.rules.items()}
    return out
