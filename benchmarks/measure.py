"""What a measurement records: memory sampled from /proc, and the job's phases with their Spark metrics."""
from __future__ import annotations

import contextlib
import json
import os
import resource
import threading
import time
import urllib.request

from common import log

WINDOW_KEYS = ("executor_python_max_rss_mib", "executor_python_pss_mib")


def _read_proc(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/{name}") as fh:
            return fh.read()
    except OSError:
        return None


def peak_rss_mib() -> float:
    """This process's own high-water RSS (VmHWM; ru_maxrss would carry the parent's peak across fork+exec)."""
    for line in (_read_proc(os.getpid(), "status") or "").splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rss_kib(pid: int) -> int:
    for line in (_read_proc(pid, "status") or "").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pss_kib(pid: int) -> int:
    for line in (_read_proc(pid, "smaps_rollup") or "").splitlines():
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
    workers the JVM forked (pyspark.daemon and its workers; PSS summed so fork-shared pages count once).

    Besides the peaks since the last ``take``, an open window (``open_window``/``close_window``, one per
    job phase) keeps the peaks of the workers' memory within it."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval = interval
        self.me = os.getpid()
        self.java: int | None = None
        self.spark_probe = None  # set once the session is up: JVM heap and block-storage samples
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.window: dict | None = None
        self.reset()

    def find_java(self) -> int | None:
        table = process_table()
        for pid in descendants(self.me, table):  # not the launcher's short-lived java that builds the command
            if "org.apache.spark.deploy.SparkSubmit" in table[pid][1]:
                return pid
        return None

    def reset(self) -> None:
        with self.lock:
            self.peak = {"python_driver_rss_mib": 0.0, "driver_jvm_rss_mib": 0.0,
                         "executor_python_pss_mib": 0.0, "executor_python_rss_sum_mib": 0.0,
                         "executor_python_max_rss_mib": 0.0, "executor_python_processes": 0,
                         "jvm_heap_used_mib": 0.0, "jvm_heap_committed_mib": 0.0, "block_storage_mib": 0.0}

    def worker_values(self) -> dict:
        """The driver JVM's RSS and its Python workers' memory (nothing before the JVM is found)."""
        if self.java is None or not os.path.exists(f"/proc/{self.java}"):
            self.java = self.find_java()
        if self.java is None:
            return {}
        table = process_table()
        workers = [p for p in descendants(self.java, table) if "pyspark.daemon" in table[p][1]
                   or "pyspark.worker" in table[p][1]]
        rss = [rss_kib(p) / 1024 for p in workers]
        return {"driver_jvm_rss_mib": rss_kib(self.java) / 1024,
                "executor_python_pss_mib": sum(pss_kib(p) for p in workers) / 1024,
                "executor_python_rss_sum_mib": sum(rss), "executor_python_max_rss_mib": max(rss, default=0.0),
                "executor_python_processes": len(workers)}

    def _record(self, values: dict) -> None:
        with self.lock:
            for key, value in values.items():
                self.peak[key] = max(self.peak[key], value)
                if self.window is not None and key in self.window:
                    self.window[key] = max(self.window[key], value)

    def sample(self) -> None:
        values = {"python_driver_rss_mib": rss_kib(self.me) / 1024, **self.worker_values()}
        if self.spark_probe is not None:
            values.update(self.spark_probe())
        self._record(values)

    def open_window(self) -> None:
        with self.lock:
            self.window = dict.fromkeys(WINDOW_KEYS, 0.0)

    def close_window(self) -> dict:
        """The workers' peaks since ``open_window`` (one more sample of the workers taken now)."""
        with contextlib.suppress(Exception):  # a process vanished between listing and reading
            self._record(self.worker_values())
        with self.lock:
            window, self.window = self.window or {}, None
        return {k: round(v, 1) for k, v in window.items()}

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
            probe.sampler.open_window()
            detail: dict = {}
            try:
                with original(name) as detail:
                    yield detail
            finally:
                probe.phases.append({"phase": name, "group": gid, "seconds": time.perf_counter() - start,
                                     "fs_bytes_read": probe.fs_bytes_read() - read0,
                                     "workers": probe.sampler.close_window(),
                                     "detail": {k: v if isinstance(v, (int, float)) else str(v)
                                                for k, v in detail.items()}})
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
                           "scan_equivalents": round(p["fs_bytes_read"] / self.table_size, 3),
                           "peak_worker_rss_mib": p["workers"].get("executor_python_max_rss_mib"),
                           "peak_workers_pss_mib": p["workers"].get("executor_python_pss_mib"),
                           "detail": p["detail"], **m})
        outside = spark_metrics["groups"].get(f"{name}|(outside phases)", {})
        outside_seconds = seconds - sum(p["seconds"] for p in self.phases)
        phases.append({"phase": "(outside phases)", "seconds": round(outside_seconds, 2),
                       "scan_equivalents": round((fs_read - sum(p["fs_bytes_read"] for p in self.phases))
                                                 / self.table_size, 3), **outside})
        shuffle = spark_metrics["totals"].get("shuffle_write_bytes", 0)
        out = {"name": name, "seconds": round(seconds, 2), "scan_equivalents": round(fs_read / self.table_size, 3),
               "scan_equivalents_with_shuffle": round((fs_read + shuffle) / self.table_size, 3),
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


def merge_metrics(spark, path: str) -> dict:
    """The operation metrics of the table's last commit (the MERGE of an in-place edit)."""
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).history(1).first()
    return {"operation": row["operation"], **{k: v for k, v in (row["operationMetrics"] or {}).items()}}
