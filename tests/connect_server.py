"""A real Spark Connect server on 127.0.0.1 for tests, started from the pip pyspark with Delta's SQL extension,
``DeltaCatalog`` and its own Hive metastore (embedded Derby, warehouse in a temp folder); a context manager.

The server runs in its own process group and is torn down (every process) even when a test fails.
Its Python workers run this very interpreter, so client and server use the same venv.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cluster import C1_ONLY, SPARK_SUBMIT, free_port, spark_env
from distunlearn.spark.stack import installed_stack

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def hive_conf(root: Path) -> dict[str, str]:
    """Spark's own Hive metastore: embedded Derby and the warehouse under ``root``."""
    return {"spark.sql.catalogImplementation": "hive",
            "spark.sql.warehouse.dir": str(root / "warehouse"),
            "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true"}


class ConnectServer:
    """``sc://127.0.0.1:<port>``: ``local[2]``, Delta, a Hive metastore under ``root``."""

    def __init__(self, root: Path, cores: int = 2):
        self.root, self.cores = root, cores
        self.port = free_port()
        self.url = f"sc://127.0.0.1:{self.port}"
        self.log = root / "connect-server.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "ConnectServer":
        self.root.mkdir(parents=True, exist_ok=True)
        conf = {
            "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(self.port),
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.default.parallelism": "4",
            "spark.databricks.delta.snapshotPartitions": "2",
            "spark.sql.sources.parallelPartitionDiscovery.parallelism": "4",
            "spark.sql.execution.arrow.maxRecordsPerBatch": "4096",
            "spark.driver.memory": "1g",
            **hive_conf(self.root),
        }
        args = [str(SPARK_SUBMIT), "--master", f"local[{self.cores}]", "--class", SERVER_CLASS,
                "--packages", installed_stack().delta_package,
                "--driver-java-options", f"-Dderby.system.home={self.root} {C1_ONLY}"]
        for key, value in conf.items():
            args += ["--conf", f"{key}={value}"]
        args.append("spark-internal")
        env = spark_env(PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_DIRS=str(self.root / "local"))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            self._wait_until_listening(timeout=300)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Spark Connect server exited with {self.proc.returncode}:\n{self.tail()}")
            with socket.socket() as s:
                s.settimeout(1)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"Spark Connect server not listening after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __exit__(self, *exc) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue
