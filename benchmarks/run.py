"""distunlearn benchmark: the job against a plain Spark scan and a single-process numpy run on the same files.

    .venv/bin/python benchmarks/run.py [--rows 1000000] [--dims 64] [--unwanted-fraction 0.1]
                                       [--scale-rows 4000000] [--out docs/benchmarks] [--quick]

The parent process generates the Delta tables (in chunks), then runs one fresh worker process per
table size, so every size gets its own Spark JVM and its own memory figures:

* ``--worker``: a Spark session (``get_session(master="local[2]")``, start-up timed on its own), a
  warm-up on a tiny table, then the job's plan (``dry_run``, rules likelihood_ratio and auto), the
  plain Spark scans of the vector column and the job's applies (``output=`` and ``in_place=True`` on
  a copy of the table with deletion vectors on). Every measurement records its wall time, the job's
  own phases (``distunlearn.job.phase`` is wrapped at run time, nothing in the package is edited),
  Spark jobs/stages/tasks per phase (job groups + the UI REST API), bytes read from the table's files
  (Hadoop FileSystem statistics of the driver JVM; local mode runs the executors in it), and peak
  memory of the driver JVM, the Python driver and the executors' Python workers (sampled /proc).
* ``--numpy-worker``: the same algorithm in one Python process over the same Parquet files (live
  files listed by ``deltalake``), reusing ``distunlearn.core``; for likelihood_ratio the Spark worker
  starts it after each of the plan's repeats, so that both see the same load.
* ``--cluster-measure``: the plan again at both sizes on a standalone cluster on this machine (a
  master and two one-core workers), so that the driver JVM's memory is the driver's alone.

Writes ``<out>/results.json`` and ``<out>/results.md``. See ``benchmarks/README.md``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

UNWANTED_PREDICATE = "topic = 'celebrity_gossip'"
CHUNK_ROWS = 131_072          # generator chunk: 131072 x 64 float64 = 64 MiB per matrix
FILE_BYTES = 64 * 1024 * 1024  # target Parquet file size of the generated tables
ROW_GROUP_ROWS = 32_768        # so that Spark can split every file
SHIFT = 0.5                    # distance between the domain means (as gaussian_domains' default)
WARMUP_ROWS = 20_000

TARGETS = {
    "plan_vs_numpy": 2.0,
    "plan_vs_scan": 4.0,
    "plan_full_passes": 2,
    "driver_memory_growth": 0.10,
    "time_growth": 4.4,
    "in_place_extra_scans": 1.0,
}


# --------------------------------------------------------------------------------------- helpers

def log(msg: str) -> None:
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def table_files(path: str) -> list[str]:
    """Absolute local paths of the live data files of the Delta table at ``path``."""
    import deltalake

    return [u[len("file://"):] if u.startswith("file://") else u for u in deltalake.DeltaTable(path).file_uris()]


def peak_rss_mib() -> float:
    """This process's own high-water RSS (VmHWM; ru_maxrss would carry the parent's peak across fork+exec)."""
    for line in (_read_proc(os.getpid(), "status") or "").splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def table_bytes(path: str) -> int:
    return sum(os.path.getsize(f) for f in table_files(path))


def _read_proc(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/{name}") as fh:
            return fh.read()
    except OSError:
        return None


def rss_kib(pid: int) -> int:
    text = _read_proc(pid, "status") or ""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pss_kib(pid: int) -> int:
    text = _read_proc(pid, "smaps_rollup") or ""
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return rss_kib(pid)


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, cmdline) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read_proc(int(entry), "stat")
        if not stat:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        cmd = (_read_proc(int(entry), "cmdline") or "").replace("\0", " ")
        out[int(entry)] = (ppid, cmd)
    return out


def descendants(root: int, table: dict[int, tuple[int, str]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class MemorySampler(threading.Thread):
    """Samples RSS of this Python driver, the driver JVM (a descendant of this process) and the Python
    workers the JVM forked (pyspark.daemon and its workers; PSS summed so fork-shared pages count once)."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval = interval
        self.me = os.getpid()
        self.java: int | None = None
        self.spark_probe = None  # set once the session is up: JVM heap and block-storage samples
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.reset()

    def find_java(self) -> int | None:
        table = process_table()
        for pid in descendants(self.me, table):  # not the launcher's short-lived java that builds the command
            if "org.apache.spark.deploy.SparkSubmit" in table[pid][1]:
                return pid
        return None

    def reset(self) -> None:
        with getattr(self, "lock", contextlib.nullcontext()):
            self.peak = {"python_driver_rss_mib": 0.0, "driver_jvm_rss_mib": 0.0,
                         "executor_python_pss_mib": 0.0, "executor_python_rss_sum_mib": 0.0,
                         "executor_python_max_rss_mib": 0.0, "executor_python_processes": 0,
                         "jvm_heap_used_mib": 0.0, "jvm_heap_committed_mib": 0.0, "block_storage_mib": 0.0}

    def sample(self) -> None:
        if self.java is None or not os.path.exists(f"/proc/{self.java}"):
            self.java = self.find_java()
        values = {"python_driver_rss_mib": rss_kib(self.me) / 1024}
        if self.java is not None:
            values["driver_jvm_rss_mib"] = rss_kib(self.java) / 1024
            table = process_table()
            workers = [p for p in descendants(self.java, table) if "pyspark.daemon" in table[p][1]
                       or "pyspark.worker" in table[p][1]]
            rss = [rss_kib(p) / 1024 for p in workers]
            values["executor_python_pss_mib"] = sum(pss_kib(p) for p in workers) / 1024
            values["executor_python_rss_sum_mib"] = sum(rss)
            values["executor_python_max_rss_mib"] = max(rss, default=0.0)
            values["executor_python_processes"] = len(workers)
        if self.spark_probe is not None:
            values.update(self.spark_probe())
        with self.lock:
            for key, value in values.items():
                self.peak[key] = max(self.peak[key], value)

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a process vanished between listing and reading
                pass
            self.stop_event.wait(self.interval)

    def take(self) -> dict:
        self.sample()
        with self.lock:
            peak = {k: round(v, 1) if isinstance(v, float) else v for k, v in self.peak.items()}
        self.reset()
        return peak


# ----------------------------------------------------------------------------------- generation

def generate_table(path: Path, rows: int, dims: int, unwanted_fraction: float, seed: int) -> dict:
    """A Delta table (id long, topic string, embedding array<float>) written chunk by chunk.

    Each chunk comes from ``distunlearn.synthetic.gaussian_domains`` (own seed per chunk, shift 0, so
    every chunk is centred at 0 with a near-identity correlated covariance); the unwanted rows get the
    same mean shift of norm ``SHIFT`` along (1, ..., 1)/sqrt(d) in every chunk. Only one chunk is ever
    in memory; deltalake streams the batches into ~64 MiB files.
    """
    import deltalake
    import numpy as np
    import pyarrow as pa

    from distunlearn.synthetic import RETAINED_TOPICS, UNWANTED_TOPIC, gaussian_domains

    schema = pa.schema([("id", pa.int64()), ("topic", pa.string()), ("embedding", pa.list_(pa.float32()))])
    n_unwanted_total = int(round(rows * unwanted_fraction))

    def batches():
        done_rows, done_unwanted, chunk = 0, 0, 0
        while done_rows < rows:
            n = min(CHUNK_ROWS, rows - done_rows)
            n_u = min(n, int(round((done_rows + n) * unwanted_fraction)) - done_unwanted)
            n_u = min(n_u, n_unwanted_total - done_unwanted)
            unwanted, retained = gaussian_domains(n_u, n - n_u, dims, shift=0.0, seed=seed + chunk)
            unwanted += SHIFT / np.sqrt(dims)
            rng = np.random.default_rng(10_000 + seed + chunk)
            x = np.vstack([unwanted, retained]).astype(np.float32)
            topics = np.concatenate([np.full(n_u, UNWANTED_TOPIC, dtype=object),
                                     rng.choice(np.array(RETAINED_TOPICS, dtype=object), n - n_u)])
            order = rng.permutation(n)
            ids = np.arange(done_rows + 1, done_rows + n + 1, dtype=np.int64)
            embedding = pa.FixedSizeListArray.from_arrays(pa.array(x[order].ravel()), dims).cast(pa.list_(pa.float32()))
            yield pa.RecordBatch.from_arrays([pa.array(ids), pa.array(topics[order], pa.string()), embedding],
                                             schema=schema)
            done_rows, done_unwanted, chunk = done_rows + n, done_unwanted + n_u, chunk + 1

    start = time.perf_counter()
    reader = pa.RecordBatchReader.from_batches(schema, batches())
    deltalake.write_deltalake(str(path), reader, mode="error", target_file_size=FILE_BYTES,
                              writer_properties=deltalake.WriterProperties(max_row_group_size=ROW_GROUP_ROWS,
                                                                           compression="SNAPPY"))
    files = table_files(str(path))
    meta = {"path": str(path), "rows": rows, "dims": dims, "unwanted_fraction": unwanted_fraction,
            "unwanted_rows": n_unwanted_total, "seed": seed, "files": len(files),
            "bytes": sum(os.path.getsize(f) for f in files), "seconds": round(time.perf_counter() - start, 2)}
    (path / "_benchmark.json").write_text(json.dumps(meta))
    return meta


def ensure_table(path: Path, rows: int, dims: int, unwanted_fraction: float, seed: int) -> dict:
    meta_file = path / "_benchmark.json"
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if (meta["rows"], meta["dims"], meta["unwanted_fraction"], meta["seed"]) == (rows, dims, unwanted_fraction, seed):
            log(f"reusing {path} ({rows:,} rows)")
            return {**meta, "reused": True}
    if path.exists():
        shutil.rmtree(path)
    log(f"generating {path}: {rows:,} x {dims} ...")
    meta = generate_table(path, rows, dims, unwanted_fraction, seed)
    log(f"generated {meta['files']} files, {meta['bytes'] / 2**20:.0f} MiB in {meta['seconds']} s")
    return meta


# ------------------------------------------------------------------------------- Spark worker

class SparkProbe:
    """Per-measurement bookkeeping: job groups per job phase, REST metrics, Hadoop FS bytes read."""

    def __init__(self, spark, sampler: MemorySampler, table_path: str, table_size: int):
        self.spark, self.sc, self.sampler = spark, spark.sparkContext, sampler
        self.table_path, self.table_size = table_path, table_size
        self.url = self.sc.uiWebUrl
        self.app = self.sc.applicationId
        self.measurement = "setup"
        self.phases: list[dict] = []
        self.jvm = spark._jvm

    # Hadoop FileSystem statistics: every byte read through the local Hadoop FS (table files and
    # _delta_log); shuffle and block-manager (checkpoint) reads do not go through it.
    def fs_bytes_read(self) -> int:
        stats = self.jvm.org.apache.hadoop.fs.FileSystem.getAllStatistics()
        return int(sum(s.getBytesRead() for s in stats if s.getScheme() == "file"))

    def group(self, name: str) -> str:
        gid = f"{self.measurement}|{name}"
        self.sc.setJobGroup(gid, gid)
        return gid

    def rest(self, endpoint: str):
        with urllib.request.urlopen(f"{self.url}/api/v1/applications/{self.app}/{endpoint}", timeout=60) as resp:
            return json.loads(resp.read())

    @contextlib.contextmanager
    def phase_wrapper(self, original):
        """Replacement for ``distunlearn.progress.phase`` as imported by ``distunlearn.job``."""
        probe = self

        @contextlib.contextmanager
        def phase(name: str):
            start, read0 = time.perf_counter(), probe.fs_bytes_read()
            gid = probe.group(name)
            try:
                with original(name) as detail:
                    yield detail
            finally:
                probe.phases.append({"phase": name, "group": gid, "seconds": time.perf_counter() - start,
                                     "fs_bytes_read": probe.fs_bytes_read() - read0})
                probe.group("(outside phases)")
        yield phase

    def live_heap_mib(self) -> float:
        """Driver JVM heap in use right after a full GC (``System.gc()``): what it still holds once a
        measurement is over, as opposed to its peak, which includes garbage not yet collected."""
        self.jvm.System.gc()
        runtime = self.jvm.java.lang.Runtime.getRuntime()
        return round((runtime.totalMemory() - runtime.freeMemory()) / 2**20, 1)

    def measure(self, name: str, fn) -> dict:
        """Run ``fn`` once as measurement ``name``; wall time, phases, Spark metrics, memory peaks."""
        import distunlearn.job as job
        import distunlearn.pipeline as pipeline

        log(f"measuring {name} ...")
        self.measurement, self.phases = name, []
        self.group("(outside phases)")
        self.sampler.reset()
        read0 = self.fs_bytes_read()
        original = job.phase
        with self.phase_wrapper(original) as wrapped:
            job.phase = pipeline.phase = wrapped
            start = time.perf_counter()
            try:
                result = fn()
            finally:
                seconds = time.perf_counter() - start
                job.phase = pipeline.phase = original
        memory = self.sampler.take()
        memory["jvm_live_heap_after_gc_mib"] = self.live_heap_mib()
        fs_read = self.fs_bytes_read() - read0
        self.sc.setJobGroup("idle", "idle")
        spark_metrics = self.spark_metrics(name)
        phases = []
        for p in self.phases:
            m = spark_metrics["groups"].get(p["group"], {})
            phases.append({"phase": p["phase"], "seconds": round(p["seconds"], 2),
                           "scan_equivalents": round(p["fs_bytes_read"] / self.table_size, 3), **m})
        outside = spark_metrics["groups"].get(f"{name}|(outside phases)", {})
        outside_seconds = seconds - sum(p["seconds"] for p in self.phases)
        phases.append({"phase": "(outside phases)", "seconds": round(outside_seconds, 2),
                       "scan_equivalents": round((fs_read - sum(p["fs_bytes_read"] for p in self.phases))
                                                 / self.table_size, 3), **outside})
        out = {"name": name, "seconds": round(seconds, 2), "scan_equivalents": round(fs_read / self.table_size, 3),
               "fs_bytes_read": fs_read, "memory": memory, "phases": phases, "totals": spark_metrics["totals"]}
        if isinstance(result, dict):
            out["result"] = result
        log(f"{name}: {seconds:.1f} s, {fs_read / self.table_size:.2f} scan-equivalents, "
            f"JVM peak {memory['driver_jvm_rss_mib']:.0f} MiB, workers peak {memory['executor_python_pss_mib']:.0f} MiB")
        return out

    def spark_metrics(self, name: str) -> dict:
        """Jobs, stages, tasks, task input bytes, shuffle bytes and source file scans per job group."""
        tracker = self.sc.statusTracker()
        try:
            stages = {(s["stageId"], s["attemptId"]): s for s in self.rest("stages")}
            executions = self.rest("sql?details=true&planDescription=true&length=100000")
        except Exception as exc:  # noqa: BLE001 - the UI is a side channel; never fail the benchmark
            return {"groups": {}, "totals": {"error": str(exc)}}
        job_group: dict[int, str] = {}
        groups: dict[str, dict] = {}
        prefix = f"{name}|"
        for gid in {p["group"] for p in self.phases} | {prefix + "(outside phases)"}:
            for job_id in tracker.getJobIdsForGroup(gid):
                job_group[job_id] = gid
        for gid in set(job_group.values()):
            groups[gid] = {"jobs": 0, "stages": 0, "tasks": 0, "task_input_bytes": 0, "shuffle_read_bytes": 0,
                           "shuffle_write_bytes": 0, "executor_run_seconds": 0.0, "source_scans": 0,
                           "source_vector_scans": 0}
        seen_stages = set()
        for job_id, gid in job_group.items():
            info = self.rest(f"jobs/{job_id}")
            g = groups[gid]
            g["jobs"] += 1
            for stage_id in info.get("stageIds", []):
                for (sid, attempt), s in stages.items():
                    if sid != stage_id or (sid, attempt) in seen_stages or s.get("status") == "SKIPPED":
                        continue
                    seen_stages.add((sid, attempt))
                    g["stages"] += 1
                    g["tasks"] += s.get("numCompleteTasks", 0)
                    g["task_input_bytes"] += s.get("inputBytes", 0)
                    g["shuffle_read_bytes"] += s.get("shuffleReadBytes", 0)
                    g["shuffle_write_bytes"] += s.get("shuffleWriteBytes", 0)
                    g["executor_run_seconds"] += s.get("executorRunTime", 0) / 1000
        # file scans of the source: Scan parquet nodes of the executions whose jobs ran in the group
        for ex in executions:
            job_ids = ex.get("successJobIds", []) + ex.get("failedJobIds", []) + ex.get("runningJobIds", [])
            gids = {job_group[j] for j in job_ids if j in job_group}
            if not gids:
                continue
            gid = sorted(gids)[0]
            scans, vector_scans = self._source_scans(ex)
            groups[gid]["source_scans"] += scans
            groups[gid]["source_vector_scans"] += vector_scans
        for g in groups.values():
            g["executor_run_seconds"] = round(g["executor_run_seconds"], 2)
        totals = {k: sum(g[k] for g in groups.values()) for k in
                  ("jobs", "stages", "tasks", "task_input_bytes", "shuffle_read_bytes", "shuffle_write_bytes",
                   "source_scans", "source_vector_scans")}
        totals["executor_run_seconds"] = round(sum(g["executor_run_seconds"] for g in groups.values()), 2)
        return {"groups": groups, "totals": totals}

    def _source_scans(self, execution: dict) -> tuple[int, int]:
        """(scans of the source table's files, those of them that read the vector column)."""
        scans = vector_scans = 0
        plan = execution.get("planDescription", "")
        read_schemas = [line for line in plan.splitlines() if "ReadSchema:" in line]
        for node in execution.get("nodes", []):
            if not node.get("nodeName", "").startswith("Scan parquet"):
                continue
            metrics = {m["name"]: m["value"] for m in node.get("metrics", [])}
            size = _parse_bytes(metrics.get("size of files read", "0"))
            if size < 0.5 * self.table_size:
                continue  # a _delta_log checkpoint, the ledger or the manifest, not the source
            scans += 1
        # the vector column is read by a scan whose ReadSchema lists it; count them in plan order
        vec = sum(1 for line in read_schemas if "embedding:array" in line)
        vector_scans = min(scans, vec)
        return scans, vector_scans


def _parse_bytes(text: str) -> float:
    """Spark UI size strings ('266.5 MiB', 'total (min, med, max)\n1.2 GiB (...)') to bytes."""
    units = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
    tokens = str(text).replace("\n", " ").replace("(", " ").replace(")", " ").replace(",", " ").split()
    for i, tok in enumerate(tokens[:-1]):
        try:
            value = float(tok)
        except ValueError:
            continue
        if tokens[i + 1] in units:
            return value * units[tokens[i + 1]]
    try:
        return float(tokens[0]) if tokens else 0.0
    except ValueError:
        return 0.0


def count_values(batches):
    """mapInArrow: the vector column reaches Python and is only counted."""
    import pyarrow as pa

    n = 0
    for batch in batches:
        n += len(batch.column(0).flatten())
    yield pa.RecordBatch.from_arrays([pa.array([n], pa.int64())], names=["n"])


def spark_worker(args) -> None:
    import distunlearn.progress  # noqa: F401 - the phase lines go to our log
    import logging

    logging.basicConfig(level=logging.INFO, format="    %(message)s", stream=sys.stdout)
    for noisy in ("py4j", "py4j.clientserver", "py4j.java_gateway"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    sampler = MemorySampler(args.sample_interval)
    sampler.start()
    work = Path(args.work_dir)
    measurements = args.measure.split(",")
    result: dict = {"rows": args.rows, "table": args.table, "measurements": {}}

    t0 = time.perf_counter()
    from pyspark.sql import functions as F

    from distunlearn.config import UnlearnConfig
    from distunlearn.job import run_unlearn
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
    result["startup"] = {"seconds": round(time.perf_counter() - start, 2), "import_seconds": round(import_seconds, 2),
                         "memory": sampler.take(), "ui": spark.sparkContext.uiWebUrl,
                         "default_parallelism": spark.sparkContext.defaultParallelism,
                         "conf": {k: spark.conf.get(k, None) for k in (
                             "spark.driver.memory", "spark.sql.shuffle.partitions",
                             "spark.sql.execution.arrow.maxRecordsPerBatch", "spark.sql.files.maxPartitionBytes",
                             "spark.sql.adaptive.enabled")}}
    log(f"Spark session up in {result['startup']['seconds']} s (UI {spark.sparkContext.uiWebUrl})")
    runtime = spark._jvm.java.lang.Runtime.getRuntime()
    executors_url = f"{spark.sparkContext.uiWebUrl}/api/v1/applications/{spark.sparkContext.applicationId}/executors"

    def jvm_sample() -> dict:
        total, free = runtime.totalMemory(), runtime.freeMemory()
        with urllib.request.urlopen(executors_url, timeout=10) as resp:
            blocks = sum(e.get("memoryUsed", 0) + e.get("diskUsed", 0) for e in json.loads(resp.read()))
        return {"jvm_heap_used_mib": (total - free) / 2**20, "jvm_heap_committed_mib": total / 2**20,
                "block_storage_mib": blocks / 2**20}

    sampler.spark_probe = jvm_sample
    size = table_bytes(args.table)
    probe = SparkProbe(spark, sampler, args.table, size)
    result["table_bytes"] = size
    result["table_files"] = len(table_files(args.table))
    result["scan_partitions"] = spark.read.format("delta").load(args.table).rdd.getNumPartitions()

    def plan(source: str, rule: str):
        return lambda: _summary(run_unlearn(spark, UnlearnConfig(source=source, unwanted=UNWANTED_PREDICATE,
                                                                 rule=rule, dry_run=True)))

    # warm-up on a tiny table: JIT, class loading, Python workers; same for every size
    warm = time.perf_counter()
    plan(args.warmup_table, "likelihood_ratio")()
    spark.read.format("delta").load(args.warmup_table).select(F.sum(F.size("embedding"))).collect()
    result["warmup_seconds"] = round(time.perf_counter() - warm, 2)
    sampler.take()

    df = spark.read.format("delta").load(args.table)
    element_sum = F.aggregate("embedding", F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double"))
    runs = {
        "plan_likelihood_ratio": plan(args.table, "likelihood_ratio"),
        "plan_auto": plan(args.table, "auto"),
        "scan_size": lambda: {"values": df.select(F.sum(F.size("embedding")).alias("n")).first()["n"]},
        "scan_aggregate": lambda: {"sum": df.select(F.sum(element_sum).alias("s")).first()["s"]},
        "scan_arrow_count": lambda: {"values": df.select("embedding").mapInArrow(count_values, "n long")
                                     .agg(F.sum("n").alias("n")).first()["n"]},
    }
    for name in measurements:
        repeats = args.repeats if name.startswith("scan") or name == "plan_likelihood_ratio" else 1
        if name in runs:
            tries, numpy_tries = [], []
            for i in range(repeats):
                tries.append(probe.measure(name if i == 0 else f"{name}#{i + 1}", runs[name]))
                if name == "plan_likelihood_ratio" and args.numpy_interleaved:
                    # the baseline runs between the plan's repeats (this JVM idle), so both see the same load
                    numpy_json = work / f"numpy_{args.rows}_likelihood_ratio.json"
                    numpy_json.unlink(missing_ok=True)
                    numpy_tries.append(run_child(args, "--numpy-worker", args.table, args.rows, numpy_json,
                                                 ["--rule", "likelihood_ratio", "--seed", str(args.seed)],
                                                 args.timeout))
            best = min(tries, key=lambda m: m["seconds"])
            best = {**best, "all_seconds": [m["seconds"] for m in tries],
                    "memory": {k: max(m["memory"][k] for m in tries) for k in tries[0]["memory"]}}
            result["measurements"][name] = best
            if numpy_tries:
                fastest = min(numpy_tries, key=lambda m: m.get("seconds", float("inf")))
                result["numpy_likelihood_ratio"] = {**fastest, "all_seconds": [m.get("seconds") for m in numpy_tries]}
        elif name == "apply_output":
            out = work / f"edited_{args.rows}"
            for p in (out, Path(str(out) + "_manifest"), out.parent / "distunlearn_ledger"):
                shutil.rmtree(p, ignore_errors=True)
            result["measurements"][name] = probe.measure(name, lambda: _summary(run_unlearn(spark, UnlearnConfig(
                source=args.table, unwanted=UNWANTED_PREDICATE, rule="likelihood_ratio", output=str(out)))))
            shutil.rmtree(out, ignore_errors=True)
        elif name == "apply_in_place_dv":
            copy = work / f"inplace_{args.rows}"
            for p in (copy, Path(str(copy) + "_manifest"), copy.parent / "distunlearn_ledger"):
                shutil.rmtree(p, ignore_errors=True)
            shutil.copytree(args.table, copy)
            t = time.perf_counter()
            spark.sql(f"ALTER TABLE delta.`{copy}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
            alter = round(time.perf_counter() - t, 2)
            m = probe.measure(name, lambda: _summary(run_unlearn(spark, UnlearnConfig(
                source=str(copy), unwanted=UNWANTED_PREDICATE, rule="likelihood_ratio", in_place=True))))
            m["enable_deletion_vectors_seconds"] = alter
            m["merge_metrics"] = _merge_metrics(spark, str(copy))
            result["measurements"][name] = m
            shutil.rmtree(copy, ignore_errors=True)
        else:
            raise SystemExit(f"unknown measurement {name}")
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    sampler.stop_event.set()
    spark.stop()


def _summary(report: dict) -> dict:
    keys = ("rule", "n_unwanted", "n_retained", "dims", "kappa", "alpha", "epsilon", "deleted", "feasible",
            "kl_removal_after", "kl_preservation_after", "output_version", "source_version_written")
    out = {k: report.get(k) for k in keys}
    out["rules"] = {r: v["deleted"] for r, v in report.get("rules", {}).items()}
    return out


def _merge_metrics(spark, path: str) -> dict:
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).history(1).first()
    return {"operation": row["operation"], **{k: v for k, v in (row["operationMetrics"] or {}).items()}}


# ------------------------------------------------------------------------------- numpy worker

def numpy_worker(args) -> None:
    """The job's algorithm in one process on the table's live Parquet files (pyarrow + numpy)."""
    t_import = time.perf_counter()
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from distunlearn.core.gaussian import PooledGaussian
    from distunlearn.core.moments import DomainMoments
    from distunlearn.core.rules import RULES, score_rows
    from distunlearn.core.selection import EditedKL, Thresholds, select_smallest_budget
    from distunlearn.synthetic import UNWANTED_TOPIC
    from distunlearn.udfs.vectors import to_matrix

    import_seconds = time.perf_counter() - t_import
    rules = RULES if args.rule == "auto" else (args.rule,)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    t = time.perf_counter()
    files = table_files(args.table)
    timings["list live files (deltalake)"] = time.perf_counter() - t

    # pass 1: moments per domain, input checks; the unwanted rows (as float32) and ids are kept
    t = time.perf_counter()
    moments = {1: None, 2: None}
    unwanted_x, unwanted_ids, all_ids = [], [], []
    nonfinite = 0
    dim = None
    for path in files:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=65_536, columns=["id", "topic", "embedding"]):
            vec = batch.column("embedding")
            if dim is None:
                dim = int(vec.value_lengths()[0].as_py())
            lengths = vec.value_lengths().to_numpy(zero_copy_only=False)
            if (lengths != dim).any() or vec.null_count:
                raise SystemExit("ragged or null vectors")
            x = to_matrix(vec, dim)
            finite = np.isfinite(x).all(axis=1)
            nonfinite += int((~finite).sum())
            ids = batch.column("id").to_numpy(zero_copy_only=False)
            is_unwanted = pc.fill_null(pc.equal(batch.column("topic"), UNWANTED_TOPIC), False) \
                .to_numpy(zero_copy_only=False)
            all_ids.append(ids)
            for label, mask in ((1, is_unwanted), (2, ~is_unwanted)):
                part = DomainMoments.from_rows(x[mask])
                moments[label] = part if moments[label] is None else moments[label].merge(part)
            unwanted_x.append(x[is_unwanted].astype(np.float32))
            unwanted_ids.append(ids[is_unwanted])
    if nonfinite:
        raise SystemExit("non-finite values")
    timings["read + moments (pass over the files)"] = time.perf_counter() - t

    t = time.perf_counter()
    ids = np.concatenate(all_ids)
    duplicates = int(len(ids) - len(np.unique(ids)))
    del all_ids, ids
    if duplicates:
        raise SystemExit("duplicate ids")
    timings["duplicate-id check"] = time.perf_counter() - t

    t = time.perf_counter()
    model = PooledGaussian.fit(moments[1], moments[2], 1e-6)
    kl = EditedKL.from_model(model)
    thresholds = Thresholds.resolve(kl, alpha_rel=0.5, epsilon_rel=1.0)
    timings["model + thresholds"] = time.perf_counter() - t

    t = time.perf_counter()
    x1 = np.concatenate(unwanted_x).astype(np.float64)
    ids1 = np.concatenate(unwanted_ids)
    del unwanted_x, unwanted_ids
    y = model.whiten(x1)
    keys = None
    if "random" in rules:
        keys = _xxhash64_keys(args.seed, ids1)
    scores = {rule: score_rows(rule, model, x1, y, keys) for rule in rules}
    timings["whiten + score"] = time.perf_counter() - t

    t = time.perf_counter()
    choices = {}
    for rule in rules:
        choice, _ = select_smallest_budget(rule, model, thresholds, y, scores[rule], ids1)
        choices[rule] = choice.deleted
    timings["sort + prefix sums + smallest f"] = time.perf_counter() - t
    total = time.perf_counter() - start
    feasible = {r: d for r, d in choices.items() if d is not None}
    best = min(feasible, key=lambda r: (feasible[r], rules.index(r))) if feasible else None
    out = {"seconds": round(total, 2), "import_seconds": round(import_seconds, 2),
           "phases": {k: round(v, 3) for k, v in timings.items()},
           "peak_rss_mib": peak_rss_mib(),
           "files": len(files), "n_unwanted": model.n1, "n_retained": model.n2, "dims": model.dim,
           "kappa": kl.kappa, "alpha": thresholds.alpha, "epsilon": thresholds.epsilon,
           "rules": choices, "rule": best, "deleted": feasible.get(best) if best else None,
           "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    Path(args.json).write_text(json.dumps(out, indent=1))


def _xxhash64_keys(seed: int, ids):
    """The random rule's keys, Spark's xxhash64(seed, id) as double, computed without Spark is out of
    scope here: the numpy run uses a seeded permutation instead (same distribution, not the same rows)."""
    import numpy as np

    return np.random.default_rng(seed).permutation(len(ids)).astype(np.float64)


# --------------------------------------------------------------------------------------- parent

def machine_info() -> dict:
    import importlib.metadata as md

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    versions = {"python": platform.python_version()}
    for pkg in ("pyspark", "delta-spark", "numpy", "pyarrow", "pandas", "deltalake"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[pkg] = md.version(pkg)
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    versions["java"] = java[0] if java else None
    load = os.getloadavg()
    git = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                       text=True).stdout.strip()
        git["modified"] = [line[3:] for line in subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
            text=True).stdout.splitlines()]
    return {"git": git, "nproc": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1), "cpu_model": cpu,
            "kernel": platform.release(), "load_average_at_start": [round(x, 2) for x in load], "versions": versions}


def run_child(args, mode: str, table: str, rows: int, json_path: Path, extra: list[str], timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), mode, "--table", table, "--rows", str(rows),
           "--json", str(json_path), "--work-dir", str(args.work_dir), *extra]
    log("running " + " ".join(cmd[2:]))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(REPO), timeout=timeout)
    out = json.loads(json_path.read_text()) if json_path.exists() else {}
    out["process_seconds"] = round(time.perf_counter() - start, 2)
    out["returncode"] = proc.returncode
    return out


def measure_on_cluster(args, tables: dict, results: dict) -> None:
    """``--cluster-measure`` at both sizes with the driver on its own: a standalone master and two one-core
    workers on 127.0.0.1 (the test suite's ``tests/cluster.py``), one fresh cluster and driver per size."""
    sys.path.insert(0, str(REPO / "tests"))
    from cluster import StandaloneCluster

    for rows in (args.rows, args.scale_rows):
        spark_json = args.work_dir / f"spark_cluster_{rows}.json"
        spark_json.unlink(missing_ok=True)
        with StandaloneCluster(args.work_dir / f"cluster_{rows}", workers=2) as cluster:
            results["sizes"][str(rows)]["spark_cluster"] = run_child(
                args, "--worker", tables[rows]["path"], rows, spark_json,
                ["--measure", args.cluster_measure, "--repeats", "1", "--master", cluster.url,
                 "--warmup-table", tables[WARMUP_ROWS]["path"], "--sample-interval", str(args.sample_interval)],
                args.timeout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--unwanted-fraction", type=float, default=0.1)
    ap.add_argument("--scale-rows", type=int, default=4_000_000)
    ap.add_argument("--out", default=None, help="results folder (default docs/benchmarks; docs/benchmarks/quick with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 100k rows, scale 400k")
    ap.add_argument("--work-dir", default=None, help="where the tables go (default /tmp/distunlearn-bench)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each scan and of the likelihood_ratio plan (best kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure", default="plan_likelihood_ratio,scan_size,scan_aggregate,scan_arrow_count,plan_auto,"
                                         "apply_output,apply_in_place_dv")
    ap.add_argument("--scale-measure", default="plan_likelihood_ratio,scan_size,scan_aggregate,scan_arrow_count")
    ap.add_argument("--scale-repeats", type=int, default=1, help="runs of each measurement at --scale-rows")
    ap.add_argument("--sample-interval", type=float, default=0.2)
    ap.add_argument("--cluster-measure", default="plan_likelihood_ratio",
                    help="measurements at both sizes on a standalone cluster on this machine (master + 2 one-core "
                         "workers), so that the driver JVM holds no executor; empty: skip")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per worker process")
    ap.add_argument("--render-only", action="store_true",
                    help="recompute the verdicts and results.md from an existing results.json")
    # internal: worker modes
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--numpy-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--table", help=argparse.SUPPRESS)
    ap.add_argument("--warmup-table", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--rule", default="likelihood_ratio", help=argparse.SUPPRESS)
    ap.add_argument("--master", default="local[2]", help=argparse.SUPPRESS)
    ap.add_argument("--numpy-interleaved", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        if "--rows" not in sys.argv:
            args.rows = 100_000
        if "--scale-rows" not in sys.argv:
            args.scale_rows = 400_000
    args.work_dir = Path(args.work_dir or "/tmp/distunlearn-bench")
    if args.render_only:
        out = Path(args.out or ("docs/benchmarks/quick" if args.quick else "docs/benchmarks"))
        out = out if out.is_absolute() else REPO / out
        results = json.loads((out / "results.json").read_text())
        par = results["parameters"]
        args.rows, args.scale_rows = par["rows"], par["scale_rows"]
        results["verdicts"] = verdicts(results, args)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "results.md").write_text(render_markdown(results, args))
        log(f"re-rendered {out / 'results.md'}")
        return
    if args.worker:
        args.measure = args.measure
        return spark_worker(args)
    if args.numpy_worker:
        return numpy_worker(args)

    out = Path(args.out or ("docs/benchmarks/quick" if args.quick else "docs/benchmarks"))
    if not out.is_absolute():
        out = REPO / out
    out.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    results = {"started_at": started.isoformat(), "machine": machine_info(),
               "parameters": {"rows": args.rows, "scale_rows": args.scale_rows, "dims": args.dims,
                              "unwanted_fraction": args.unwanted_fraction, "unwanted": UNWANTED_PREDICATE,
                              "thresholds": {"alpha_rel": 0.5, "epsilon_rel": 1.0}, "master": "local[2]",
                              "repeats": args.repeats, "scale_repeats": args.scale_repeats, "quick": args.quick, "seed": args.seed,
                              "shift": SHIFT, "file_bytes_target": FILE_BYTES, "row_group_rows": ROW_GROUP_ROWS,
                              "cluster_measure": args.cluster_measure},
               "targets": TARGETS, "tables": {}, "sizes": {}}

    tables = {}
    for rows in (WARMUP_ROWS, args.rows, args.scale_rows):
        path = args.work_dir / f"events_{rows}x{args.dims}_{args.unwanted_fraction}_{args.seed}"
        tables[rows] = ensure_table(path, rows, args.dims, args.unwanted_fraction, args.seed)
        results["tables"][str(rows)] = tables[rows]
    results["generator_peak_rss_mib"] = peak_rss_mib()
    log(f"generator peak RSS {results['generator_peak_rss_mib']:.0f} MiB")

    for rows, measure, repeats in ((args.rows, args.measure, args.repeats),
                                   (args.scale_rows, args.scale_measure, args.scale_repeats)):
        table = tables[rows]["path"]
        size = {"rows": rows}
        spark_json = args.work_dir / f"spark_{rows}.json"
        spark_json.unlink(missing_ok=True)
        size["spark"] = run_child(args, "--worker", table, rows, spark_json,
                                  ["--measure", measure, "--repeats", str(repeats), "--numpy-interleaved",
                                   "--seed", str(args.seed), "--warmup-table", tables[WARMUP_ROWS]["path"],
                                   "--sample-interval", str(args.sample_interval)], args.timeout)
        size["numpy_likelihood_ratio"] = size["spark"].pop("numpy_likelihood_ratio", {})
        if "plan_auto" in measure:
            np_json = args.work_dir / f"numpy_{rows}_auto.json"
            np_json.unlink(missing_ok=True)
            size["numpy_auto"] = run_child(args, "--numpy-worker", table, rows, np_json,
                                           ["--rule", "auto", "--seed", str(args.seed)], args.timeout)
        results["sizes"][str(rows)] = size
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if args.cluster_measure:
        measure_on_cluster(args, tables, results)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    results["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    results["verdicts"] = verdicts(results, args)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "results.md").write_text(render_markdown(results, args))
    log(f"wrote {out / 'results.json'} and {out / 'results.md'}")


# --------------------------------------------------------------------------------------- report

def _m(results, rows, name, run="spark"):
    """A measurement at ``rows`` of the ``run`` (``spark``: local[2]; ``spark_cluster``: standalone), named
    without the repeat suffix (the best repeat is kept)."""
    m = results["sizes"].get(str(rows), {}).get(run, {}).get("measurements", {}).get(name)
    return None if m is None else {**m, "name": name}


def verdicts(results: dict, args) -> list[dict]:
    base, scale = args.rows, args.scale_rows
    out = []
    plan = _m(results, base, "plan_likelihood_ratio")
    plan_auto = _m(results, base, "plan_auto")
    np_lr = results["sizes"][str(base)].get("numpy_likelihood_ratio", {})
    scan = _m(results, base, "scan_aggregate")
    scan_arrow = _m(results, base, "scan_arrow_count")
    scan_size = _m(results, base, "scan_size")

    def add(target, value, limit, met, measured, reason=""):
        out.append({"target": target, "value": value, "limit": limit, "met": met, "measured": measured,
                    "reason": "" if met else reason})

    if plan and np_lr.get("seconds"):
        r = plan["seconds"] / np_lr["seconds"]
        add("plan time <= 2x single-process numpy (likelihood_ratio)", round(r, 2), TARGETS["plan_vs_numpy"],
            r <= TARGETS["plan_vs_numpy"],
            f"plan {plan['seconds']} s vs numpy {np_lr['seconds']} s", _why_slow(plan))
    scans = [m for m in (scan_size, scan, scan_arrow) if m]
    floor = min(scans, key=lambda m: m["seconds"]) if scans else None
    if plan and floor:
        r = plan["seconds"] / floor["seconds"]
        others = "; ".join(f"vs {m['name']} {m['seconds']} s: {plan['seconds'] / m['seconds']:.2f}x" for m in scans)
        add("plan time <= 4x the plain Spark scan of the vector column (floor: fastest of the scans)", round(r, 2),
            TARGETS["plan_vs_scan"], r <= TARGETS["plan_vs_scan"],
            f"plan {plan['seconds']} s vs {floor['name']} {floor['seconds']} s ({others})", _why_slow(plan))
    for m in (plan, plan_auto):
        if not m:
            continue
        passes = m["totals"].get("source_vector_scans", 0)
        eq = m["scan_equivalents"]
        add(f"at most 2 full passes over the data to plan ({m['name']})", passes, TARGETS["plan_full_passes"],
            passes <= TARGETS["plan_full_passes"],
            f"{passes} scans of the table that read the vector column, {m['totals'].get('source_scans')} file scans "
            f"in all, {eq} scan-equivalents of bytes read from the table's files",
            "; ".join(f"{p['phase']}: {p.get('source_vector_scans', 0)} vector scans / {p['scan_equivalents']} "
                      f"scan-eq" for p in m["phases"] if p.get("source_scans")))
    plan_scale = _m(results, scale, "plan_likelihood_ratio")
    if plan and plan_scale:
        a, b = plan["memory"]["driver_jvm_rss_mib"], plan_scale["memory"]["driver_jvm_rss_mib"]
        growth = b / a - 1 if a else float("nan")
        pa_, pb = plan["memory"]["python_driver_rss_mib"], plan_scale["memory"]["python_driver_rss_mib"]
        add(f"driver peak memory grows <= 10% from {base:,} to {scale:,} rows (plan, likelihood_ratio)",
            round(growth, 3), TARGETS["driver_memory_growth"], growth <= TARGETS["driver_memory_growth"],
            f"driver JVM peak RSS {a:.0f} -> {b:.0f} MiB; JVM heap used {plan['memory'].get('jvm_heap_used_mib')} -> "
            f"{plan_scale['memory'].get('jvm_heap_used_mib')} MiB (committed {plan['memory'].get('jvm_heap_committed_mib')}"
            f" -> {plan_scale['memory'].get('jvm_heap_committed_mib')}); checkpoint block storage "
            f"{plan['memory'].get('block_storage_mib')} -> {plan_scale['memory'].get('block_storage_mib')} MiB; "
            f"Python driver {pa_:.0f} -> {pb:.0f} MiB",
            "in local mode the driver JVM is also the executor: the scoring and ordering local checkpoints "
            "(MEMORY_AND_DISK block storage, O(unwanted rows x dims) doubles), the Arrow batches and the shuffle "
            "buffers live in its heap, which G1 grows towards -Xmx (spark.driver.memory) under that pressure")
    alone, alone_scale = _m(results, base, "plan_likelihood_ratio", "spark_cluster"), \
        _m(results, scale, "plan_likelihood_ratio", "spark_cluster")
    if alone and alone_scale:
        a, b = alone["memory"]["driver_jvm_rss_mib"], alone_scale["memory"]["driver_jvm_rss_mib"]
        growth = b / a - 1 if a else float("nan")
        add(f"driver peak memory grows <= 10% from {base:,} to {scale:,} rows, driver JVM alone (standalone "
            f"cluster, executors in their own JVMs; plan, likelihood_ratio)", round(growth, 3),
            TARGETS["driver_memory_growth"], growth <= TARGETS["driver_memory_growth"],
            f"driver JVM peak RSS {a:.0f} -> {b:.0f} MiB; JVM heap used {alone['memory'].get('jvm_heap_used_mib')} -> "
            f"{alone_scale['memory'].get('jvm_heap_used_mib')} MiB (committed "
            f"{alone['memory'].get('jvm_heap_committed_mib')} -> {alone_scale['memory'].get('jvm_heap_committed_mib')});"
            f" heap after a full GC {alone['memory'].get('jvm_live_heap_after_gc_mib')} -> "
            f"{alone_scale['memory'].get('jvm_live_heap_after_gc_mib')} MiB;"
            f" Python driver {alone['memory']['python_driver_rss_mib']:.0f} -> "
            f"{alone_scale['memory']['python_driver_rss_mib']:.0f} MiB; plan {alone['seconds']} -> "
            f"{alone_scale['seconds']} s", "the peak includes garbage not yet collected: G1 grows the young "
            "generation with the allocation rate of the work the driver schedules (4x the tasks at 4x the rows); "
            "the heap after a full GC is what the driver still holds")
    if plan and plan_scale:
        t = plan_scale["seconds"] / plan["seconds"]
        add(f"plan time grows <= 4.4x from {base:,} to {scale:,} rows", round(t, 2), TARGETS["time_growth"],
            t <= TARGETS["time_growth"], f"{plan['seconds']} s -> {plan_scale['seconds']} s "
            f"(aggregate scan {scan['seconds'] if scan else '?'} s -> "
            f"{(_m(results, scale, 'scan_aggregate') or {}).get('seconds', '?')} s)",
            "see the per-phase growth in results.md")
    inplace = _m(results, base, "apply_in_place_dv")
    if plan and inplace and floor:
        # the apply-only work: its own phases plus the extra work outside phases (ledger, history, checks);
        # the plan part of the apply is not subtracted as a whole because it is as noisy as any run
        own = [p for p in inplace["phases"] if p["phase"] in ("writing manifest", "committing the edit")]
        outside = next(p for p in inplace["phases"] if p["phase"] == "(outside phases)")
        plan_outside = next(p for p in plan["phases"] if p["phase"] == "(outside phases)")
        extra_s = sum(p["seconds"] for p in own) + outside["seconds"] - plan_outside["seconds"]
        extra_scans = extra_s / floor["seconds"]
        extra_bytes = inplace["scan_equivalents"] - plan["scan_equivalents"]
        vs = "; ".join(f"{extra_s / m['seconds']:.2f} x {m['name']}" for m in scans)
        add("--in-place apply with deletion vectors costs <= 1 more scan-equivalent than the plan",
            round(extra_scans, 2), TARGETS["in_place_extra_scans"], extra_scans <= TARGETS["in_place_extra_scans"],
            f"apply-only work {extra_s:.1f} s (manifest + commit phases + {outside['seconds'] - plan_outside['seconds']:.1f} s "
            f"more outside phases; whole apply {inplace['seconds']} s vs plan {plan['seconds']} s) = {vs}; "
            f"bytes read from table files: {extra_bytes:+.2f} scan-equivalents; "
            f"{inplace['totals'].get('jobs', 0) - plan['totals'].get('jobs', 0):+d} Spark jobs",
            "; ".join(f"{p['phase']} {p['seconds']} s ({p.get('jobs', 0)} jobs, {p['scan_equivalents']} scan-eq, "
                      f"shuffle write {p.get('shuffle_write_bytes', 0) / 2**20:.0f} MiB)"
                      for p in own + [outside])
            + (f"; MERGE metrics: executionTimeMs {inplace.get('merge_metrics', {}).get('executionTimeMs')}, "
               f"scanTimeMs {inplace.get('merge_metrics', {}).get('scanTimeMs')}, rewriteTimeMs "
               f"{inplace.get('merge_metrics', {}).get('rewriteTimeMs')}" if inplace.get("merge_metrics") else ""))
    return out


def _why_slow(m: dict) -> str:
    ph = sorted(m["phases"], key=lambda p: -p["seconds"])[:3]
    return "most expensive phases: " + "; ".join(
        f"{p['phase']} {p['seconds']} s ({p.get('jobs', 0)} jobs, {p['scan_equivalents']} scan-eq, "
        f"shuffle write {p.get('shuffle_write_bytes', 0) / 2**20:.0f} MiB)" for p in ph)


def render_markdown(results: dict, args) -> str:
    mach, par = results["machine"], results["parameters"]
    base, scale = args.rows, args.scale_rows
    lines = [f"# distunlearn benchmark ({'quick smoke run' if par['quick'] else 'full run'})", "",
             f"Run {results['started_at']} -> {results.get('finished_at')}"
             + (f" on commit `{mach['git'].get('commit', '?')[:10]}`" if mach.get("git") else "")
             + (f" (modified: {', '.join(mach['git']['modified'])})" if mach.get("git", {}).get("modified") else "")
             + ". Generated by `benchmarks/run.py` (see `benchmarks/README.md` for what each figure means).", "",
             "## Machine and versions", "",
             "| nproc | memory | CPU | load avg at start | python | pyspark | delta-spark | numpy | pyarrow | deltalake | java |",
             "|---|---|---|---|---|---|---|---|---|---|---|",
             f"| {mach['nproc']} | {mach['memory_gib']} GiB | {mach['cpu_model']} | {mach['load_average_at_start']} | "
             + " | ".join(str(mach['versions'].get(k)) for k in ("python", "pyspark", "delta-spark", "numpy", "pyarrow",
                                                                  "deltalake", "java")) + " |", "",
             f"Data: {par['dims']} dims float32, unwanted fraction {par['unwanted_fraction']}, `{par['unwanted']}`, "
             f"alpha_rel 0.5, epsilon_rel 1.0; Spark `{par['master']}`; scans and the likelihood_ratio plan: best of "
             f"{par['repeats']} runs. The machine is shared: compare ratios within this run.", ""]
    lines += ["## Tables", "", "| rows | files | MiB | Spark scan partitions | generation s |", "|---|---|---|---|---|"]
    for rows in (base, scale):
        t = results["tables"][str(rows)]
        parts = results["sizes"].get(str(rows), {}).get("spark", {}).get("scan_partitions", "?")
        lines.append(f"| {rows:,} | {t['files']} | {t['bytes'] / 2**20:.0f} | {parts} | {t['seconds']}"
                     f"{' (reused)' if t.get('reused') else ''} |")
    lines += ["", f"Generator peak RSS: {results.get('generator_peak_rss_mib')} MiB.", ""]

    lines += ["## Verdicts", "", "| target | measured | limit | met | figures | reason when not met |",
              "|---|---|---|---|---|---|"]
    for v in results.get("verdicts", []):
        lines.append(f"| {v['target']} | {v['value']} | {v['limit']} | {'yes' if v['met'] else '**no**'} | "
                     f"{v['measured']} | {v['reason']} |")

    lines += ["", "## Wall times", "",
              "| measurement | " + " | ".join(f"{r:,} rows" for r in (base, scale)) + " | growth |", "|---|---|---|---|"]
    names = ["startup", "plan_likelihood_ratio", "plan_auto", "apply_output", "apply_in_place_dv", "scan_size",
             "scan_aggregate", "scan_arrow_count", "numpy_likelihood_ratio", "numpy_auto"]
    for name in names:
        vals = []
        for rows in (base, scale):
            size = results["sizes"].get(str(rows), {})
            if name == "startup":
                v = size.get("spark", {}).get("startup", {}).get("seconds")
            elif name.startswith("numpy"):
                v = size.get(name, {}).get("seconds")
            else:
                v = (size.get("spark", {}).get("measurements", {}).get(name) or {}).get("seconds")
            vals.append(v)
        if vals == [None, None]:
            continue
        growth = f"{vals[1] / vals[0]:.2f}x" if all(vals) else ""
        lines.append(f"| {name} | " + " | ".join("" if v is None else f"{v} s" for v in vals) + f" | {growth} |")
    for name in (par.get("cluster_measure") or "").split(","):
        vals = [(_m(results, rows, name, "spark_cluster") or {}).get("seconds") for rows in (base, scale)]
        if any(vals):
            growth = f"{vals[1] / vals[0]:.2f}x" if all(vals) else ""
            lines.append(f"| {name} (standalone cluster, 2 one-core workers) | "
                         + " | ".join("" if v is None else f"{v} s" for v in vals) + f" | {growth} |")

    lines += ["", "## Memory peaks (MiB)", "",
              "| measurement | rows | driver JVM RSS | JVM heap used | JVM heap committed | JVM heap after full GC | "
              "block storage (checkpoints) | Python driver RSS | executor Python PSS (sum) | largest worker RSS | "
              "worker processes |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rows in (base, scale):
        sp = results["sizes"].get(str(rows), {}).get("spark", {})
        entries = [("startup", sp.get("startup", {}).get("memory"))]
        entries += [(n, m["memory"]) for n, m in sp.get("measurements", {}).items()]
        cluster = results["sizes"].get(str(rows), {}).get("spark_cluster", {})
        entries += [(f"{n} (standalone cluster: driver JVM alone)", m["memory"])
                    for n, m in cluster.get("measurements", {}).items()]
        for name, mem in entries:
            if not mem:
                continue
            lines.append(f"| {name} | {rows:,} | {mem['driver_jvm_rss_mib']} | {mem.get('jvm_heap_used_mib', '')} | "
                         f"{mem.get('jvm_heap_committed_mib', '')} | {mem.get('jvm_live_heap_after_gc_mib', '')} | "
                         f"{mem.get('block_storage_mib', '')} | "
                         f"{mem['python_driver_rss_mib']} | "
                         f"{mem['executor_python_pss_mib']} | {mem['executor_python_max_rss_mib']} | "
                         f"{mem['executor_python_processes']} |")
        for rule in ("likelihood_ratio", "auto"):
            n = results["sizes"].get(str(rows), {}).get(f"numpy_{rule}")
            if n and n.get("peak_rss_mib"):
                lines.append(f"| numpy_{rule} (one process) | {rows:,} | | | | | | {n['peak_rss_mib']} | | | |")

    lines += ["", "## Phases of the job", "",
              "Per measurement: wall seconds, Spark jobs / stages / tasks, file scans of the source (those reading "
              "the vector column), scan-equivalents (bytes read from files / table bytes), task input bytes (includes "
              "reads of local-checkpoint blocks), shuffle write.", ""]
    for rows in (base, scale):
        sp = results["sizes"].get(str(rows), {}).get("spark", {})
        for name, m in sp.get("measurements", {}).items():
            if name.startswith("scan"):
                continue
            lines += [f"### {name}, {rows:,} rows: {m['seconds']} s", "",
                      "| phase | s | jobs | stages | tasks | source scans (vector) | scan-eq | task input MiB | "
                      "shuffle write MiB | executor run s |", "|---|---|---|---|---|---|---|---|---|---|"]
            for p in m["phases"]:
                lines.append(f"| {p['phase']} | {p['seconds']} | {p.get('jobs', 0)} | {p.get('stages', 0)} | "
                             f"{p.get('tasks', 0)} | {p.get('source_scans', 0)} ({p.get('source_vector_scans', 0)}) | "
                             f"{p['scan_equivalents']} | {p.get('task_input_bytes', 0) / 2**20:.0f} | "
                             f"{p.get('shuffle_write_bytes', 0) / 2**20:.0f} | {p.get('executor_run_seconds', 0)} |")
            res = m.get("result") or {}
            if res:
                lines.append("")
                lines.append(f"Result: rule {res.get('rule')}, deleted {res.get('deleted')} of {res.get('n_unwanted')}"
                             f" unwanted; per rule {res.get('rules')}")
            if m.get("merge_metrics"):
                lines.append("")
                lines.append(f"MERGE metrics: {m['merge_metrics']}")
            lines.append("")
    lines += ["See `breakdown.md` (from `benchmarks/breakdown.py`, when present) for the plan's pieces timed one "
              "by one and the prototypes of cheaper designs.", ""]
    lines += ["## numpy single-process runs", "", "| rows | rule | s | phases | deleted (per rule) | peak RSS MiB |",
              "|---|---|---|---|---|---|"]
    for rows in (base, scale):
        for rule in ("likelihood_ratio", "auto"):
            n = results["sizes"].get(str(rows), {}).get(f"numpy_{rule}")
            if not n or "seconds" not in n:
                continue
            phases = "; ".join(f"{k} {v} s" for k, v in n["phases"].items())
            lines.append(f"| {rows:,} | {rule} | {n['seconds']} | {phases} | {n['rules']} | {n['peak_rss_mib']} |")
    lines += ["", "The `random` rule's numpy keys are a seeded permutation, not Spark's xxhash64, so its count may "
              "differ from the job's; every other rule must match the job's count exactly.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
