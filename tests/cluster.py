"""A real Spark standalone cluster on 127.0.0.1 for tests: one master and N one-core workers, started from
the pip pyspark installation and torn down (every process group) even when a test fails.

Also: a Python interpreter that reaches the project's third-party packages (numpy, pandas, pyarrow,
pyspark, delta-spark) but not ``distunlearn`` itself, so a job that works on it proves the package
really travels with ``--py-files``.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).resolve().parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"
SPARK_SUBMIT = SPARK_HOME / "bin" / "spark-submit"
# JVM option of the cluster's short-lived processes (master, workers, driver, executors): compile with C1
# only, so that no C2 compiler threads compete for a two-core test machine's cores
C1_ONLY = "-XX:TieredStopAtLevel=1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_env(**extra: str) -> dict[str, str]:
    """The environment of every cluster process: this SPARK_HOME, loopback only, no inherited PYTHONPATH
    (nor a gateway port of the test session's own JVM)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_CONF_DIR")}
    env.update(SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1", SPARK_LOCAL_HOSTNAME="localhost",
               PYTHONNOUSERSITE="1", **extra)
    return env


def isolated_python(root: Path) -> Path:
    """A fresh venv (no pip) whose only extra path is this venv's site-packages, added by a ``.pth`` file.

    Paths added by a ``.pth`` file are not site directories, so the ``.pth`` files inside them are not
    run: the editable install's finder (``__editable__.distunlearn-*.pth``) stays inactive and
    ``import distunlearn`` fails, while numpy, pandas, pyarrow, pyspark and delta import as usual.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    (Path(site) / "borrowed_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@dataclass
class Daemon:
    """One cluster process (its own process group) and its log file."""

    name: str
    proc: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class StandaloneCluster:
    """``spark://127.0.0.1:<port>`` with ``workers`` one-core, 1 GiB workers; a context manager."""

    root: Path
    workers: int = 2
    timeout: float = 120.0
    port: int = field(default_factory=free_port)
    webui: int = field(default_factory=free_port)
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def work_dir(self, i: int) -> Path:
        return self.root / f"worker-{i}"

    def _start(self, name: str, *args: str, cwd: Path) -> Daemon:
        cwd.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([str(SPARK_CLASS), *args], cwd=cwd, env=spark_env(SPARK_DAEMON_JAVA_OPTS=C1_ONLY),
                                    stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        daemon = Daemon(name, proc, log)
        self.daemons.append(daemon)
        return daemon

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.webui}/json/", timeout=5) as response:
            return json.load(response)

    def alive_workers(self) -> int:
        try:
            return int(self.state().get("aliveworkers", 0))
        except OSError:
            return -1

    def __enter__(self) -> "StandaloneCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                        "--port", str(self.port), "--webui-port", str(self.webui), cwd=self.root / "master")
            self._wait(lambda: self.alive_workers() >= 0, "the master's web UI")
            for i in range(self.workers):
                self._start(f"worker-{i}", "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                            "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()),
                            "--work-dir", str(self.work_dir(i)), cwd=self.work_dir(i))
            self._wait(lambda: self.alive_workers() == self.workers, f"{self.workers} alive workers")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for daemon in self.daemons:
                if daemon.proc.poll() is not None:
                    raise RuntimeError(f"{daemon.name} exited with {daemon.proc.returncode}:\n{daemon.text()[-3000:]}")
            if ready():
                return
            time.sleep(0.5)
        logs = "\n".join(f"--- {d.name}\n{d.text()[-1500:]}" for d in self.daemons)
        raise TimeoutError(f"no {what} after {self.timeout:.0f} s\n{logs}")

    def stop(self) -> None:
        """SIGTERM each process group (worker JVMs, their executors and Python daemons), SIGKILL what stays."""
        for daemon in reversed(self.daemons):
            _signal_group(daemon.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for daemon in reversed(self.daemons):
            try:
                daemon.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait()

    def group_members(self) -> list[int]:
        """Live processes still in any of the cluster's process groups."""
        groups = {d.proc.pid for d in self.daemons}
        return [pid for pid, pgid, state in _processes() if pgid in groups and state not in "ZX"]


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _processes():
    """(pid, process group, state) of every process, from /proc."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            yield int(entry), int(fields[2]), fields[0]


def process_tree() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, argv) of every process."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
            except OSError:
                continue
            procs[int(entry)] = (ppid, argv)
    return procs


def descendants(root: int, procs: dict[int, tuple[int, list[str]]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class PythonWorkerWatch:
    """Samples, in a thread, the interpreters of the ``pyspark.daemon`` processes under each cluster worker:
    which Python each worker's executor really ran its tasks with."""

    def __init__(self, cluster: StandaloneCluster, interval: float = 0.2):
        self.cluster, self.interval = cluster, interval
        self.seen: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PythonWorkerWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        workers = [d for d in self.cluster.daemons if d.name.startswith("worker-")]
        while not self._stop.is_set():
            procs = process_tree()
            for worker in workers:
                for pid in descendants(worker.proc.pid, procs):
                    argv = procs[pid][1]
                    if "pyspark.daemon" in argv:
                        self.seen.setdefault(worker.name, set()).add(argv[0])
            self._stop.wait(self.interval)
