"""SparkSession with Delta Lake for the console command, notebooks and spark-submit, local or over Spark
Connect; and the run-scoped session that carries the settings a run's Delta commands need."""
from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
import tempfile
import uuid
from contextlib import contextmanager

from distunlearn.spark.stack import installed_stack, require_pyspark
from distunlearn.spark.stack import object_store_packages as stack_object_store_packages

require_pyspark()
from pyspark.sql import SparkSession  # noqa: E402


log = logging.getLogger("distunlearn")

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}

def local_driver_memory() -> str:
    """Heap of a local JVM, which also runs the executors and holds their checkpoints: a quarter of the
    machine's memory, between 2 and 8 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "2g"
    return f"{max(2, min(8, total // 4 // 2**30))}g"


LOCAL_CONF = {
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "4096",
    "spark.driver.memory": local_driver_memory(),
    "spark.databricks.delta.snapshotPartitions": "8",
    # VACUUM lists files with this many tasks (default 10000): far too many for one machine
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "8",
}

REMOTE_ENV = "SPARK_REMOTE"


def object_store_packages(*locations: str | None) -> list[str]:
    """The Maven packages of the object-store schemes among ``locations`` (paths, URIs or names), for the
    Hadoop of the installed Spark (``distunlearn.spark.stack``). A local session gets the package of every
    scheme its tables use; clusters configure their own."""
    schemes = {loc.split("://", 1)[0].lower() for loc in locations if isinstance(loc, str) and "://" in loc}
    if not schemes:
        return []
    by_scheme = stack_object_store_packages()
    return sorted({by_scheme[s] for s in schemes if s in by_scheme})


def get_session(app_name: str = "distunlearn", master: str | None = None, conf: dict | None = None,
                remote: str | None = None, spark_log: str | None = None,
                packages: list[str] | None = None) -> SparkSession:
    """The active session if there is one (notebook, test), else a new one with Delta configured.

    ``remote`` (or ``SPARK_REMOTE``), e.g. ``sc://host:15002``, connects to a Spark Connect server, which
    must have Delta's SQL extension and ``DeltaCatalog``; ``conf`` then sets runtime SQL settings only.
    Under ``spark-submit`` the JVM already exists: Delta's jars come from ``--packages`` or ``spark.jars``
    (see ``conf/spark-defaults.conf``). Otherwise a local JVM is started with the jars resolved from Maven
    Central (``spark.jars.packages``, with ``packages`` such as ``object_store_packages``) unless
    ``spark.jars`` is given in ``conf`` for air-gapped hosts; with ``spark_log`` its console output (Ivy,
    Spark's warnings) goes to that file.
    """
    conf = dict(conf or {})
    remote = remote or os.environ.get(REMOTE_ENV)
    if remote:
        session = SparkSession.builder.remote(remote).getOrCreate()
        for key, value in conf.items():
            session.conf.set(key, value)
        return session
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    for key, value in DELTA_CONF.items():
        builder = builder.config(key, value)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit: a local JVM of our own
        builder = builder.master(master or os.environ.get("DISTUNLEARN_MASTER", "local[*]"))
        for key, value in LOCAL_CONF.items():
            conf.setdefault(key, value)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers import this very installation
        if "spark.jars" not in conf:   # Delta's jar for the installed pyspark and delta-spark, from Maven Central
            stack = installed_stack()
            extra = [p for p in conf.pop("spark.jars.packages", "").split(",") if p] + list(packages or [])
            conf["spark.jars.packages"] = ",".join(dict.fromkeys([stack.delta_package, *extra]))
    conf.setdefault("spark.log.level", os.environ.get("DISTUNLEARN_SPARK_LOG_LEVEL", "WARN" if spark_log else "ERROR"))
    for key, value in conf.items():
        builder = builder.config(key, value)
    with _console_to(spark_log):
        session = builder.getOrCreate()
    return session


def default_spark_log() -> str:
    """A new log file for the JVM's console output: ``$DISTUNLEARN_LOG_DIR`` or ``<tmp>/distunlearn``."""
    folder = os.environ.get("DISTUNLEARN_LOG_DIR") or os.path.join(tempfile.gettempdir(), "distunlearn")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"spark-{dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log")


@contextmanager
def _console_to(path: str | None):
    """Point file descriptors 1 and 2 at ``path`` while the JVM starts: the JVM (and the Python workers it
    starts later) keep writing there, while this process gets its own stdout and stderr back."""
    if path is None or "PYSPARK_GATEWAY_PORT" in os.environ:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as target:
        os.dup2(target.fileno(), 1)
        os.dup2(target.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def is_connect(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect client session."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def setting(spark: SparkSession, key: str) -> str | None:
    """A setting of the session (a Connect client reads the server's), or None when unset or hidden."""
    try:
        return spark.conf.get(key, None) or None
    except Exception:  # noqa: BLE001 - a setting the server does not show
        return None


def cores(spark: SparkSession) -> int:
    """Task slots of the cluster, from its settings (a Connect client reads the server's):
    ``spark.default.parallelism``; else a local master's threads; else executors x cores each; else 2."""
    parallelism = setting(spark, "spark.default.parallelism")
    if parallelism and parallelism.isdigit():
        return max(int(parallelism), 1)
    local = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", (setting(spark, "spark.master") or "").strip())
    if local:
        threads = local.group(1)
        return (os.cpu_count() or 1) if threads == "*" else int(threads or 1)
    executors, per_executor = setting(spark, "spark.executor.instances"), setting(spark, "spark.executor.cores")
    if executors and per_executor and executors.isdigit() and per_executor.isdigit():
        return max(int(executors) * int(per_executor), 1)
    return 2


def conf_bytes(spark: SparkSession, key: str) -> int | None:
    """A size setting in bytes ("134217728", "128m", "64MB"), or None when unset or unreadable."""
    text = (setting(spark, key) or "").strip().lower()
    size = re.fullmatch(r"(\d+)\s*([kmgt]?)b?", text)
    return int(size.group(1)) * 1024 ** " kmgt".index(size.group(2) or " ") if size else None


def sibling_session(spark: SparkSession) -> SparkSession:
    """A new session on the same application: same catalog and cluster, its own SQL settings and temp
    views. Classic: ``newSession()``; Connect: a new session id on the same server."""
    if not is_connect(spark):
        return spark.newSession()
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    return ConnectSession(connection=spark.client._builder)


@contextmanager
def session_conf(spark: SparkSession, conf: dict):
    """Runtime SQL settings for the duration of a block; earlier values (or their absence) come back."""
    saved = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


@contextmanager
def run_session(spark: SparkSession, conf: dict):
    """A session of its own for Delta commands that take settings only from the session (MERGE, REORG,
    VACUUM): ``conf`` is set there, so nobody else using ``spark`` ever sees it. It shares the catalog,
    the cluster and global temp views with ``spark``; it is closed after the block."""
    try:
        session = sibling_session(spark)
    except Exception as exc:  # noqa: BLE001 - a client that cannot open a second session
        log.warning("no separate session for the run's Delta settings (%s): setting them on the shared "
                    "session for one command", exc)
        with session_conf(spark, conf):
            yield spark
        return
    for key, value in conf.items():
        session.conf.set(key, value)
    try:
        yield session
    finally:
        if is_connect(session):
            session.client.release_session()
            session.client.close()


@contextmanager
def run_session_reading(df, conf: dict, name: str):
    """``run_session`` in which ``df`` can be read as a table: yields the session and the name of a global
    temporary view of ``df`` (``global_temp.<name>_<uuid>``), dropped after the block."""
    view = f"{name}_{uuid.uuid4().hex}"
    df.createOrReplaceGlobalTempView(view)
    try:
        with run_session(df.sparkSession, conf) as session:
            yield session, f"global_temp.{view}"
    finally:
        df.sparkSession.catalog.dropGlobalTempView(view)
