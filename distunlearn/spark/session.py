"""SparkSession with Delta Lake, for the console command, notebooks and spark-submit."""
from __future__ import annotations

import functools
import os
import sys
from contextlib import contextmanager

from pyspark.sql import SparkSession

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}

LOCAL_CONF = {
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "4096",
    "spark.driver.memory": "2g",
    "spark.databricks.delta.snapshotPartitions": "8",
    # VACUUM lists files with this many tasks (default 10000): far too many for one machine
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "8",
}


def get_session(app_name: str = "distunlearn", master: str | None = None, conf: dict | None = None) -> SparkSession:
    """The active session if there is one (notebook, test), else a new one with Delta configured.

    Under ``spark-submit`` the JVM already exists: Delta's jars must come from ``--packages`` or
    ``spark.jars`` (see ``conf/spark-defaults.conf``). Otherwise the jars are resolved from Maven
    Central (``spark.jars.packages``) unless ``spark.jars`` is given in ``conf`` for air-gapped hosts.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    for key, value in DELTA_CONF.items():
        builder = builder.config(key, value)
    conf = dict(conf or {})
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit: a local JVM of our own
        builder = builder.master(master or os.environ.get("DISTUNLEARN_MASTER", "local[*]"))
        for key, value in LOCAL_CONF.items():
            conf.setdefault(key, value)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers import this very installation
        if "spark.jars" not in conf:
            from delta import configure_spark_with_delta_pip
            builder = configure_spark_with_delta_pip(builder)
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(os.environ.get("DISTUNLEARN_SPARK_LOG_LEVEL", "ERROR"))
    return session


# A broadcast join collects its smaller side on the driver. The jobs join row sets only (deleted ids,
# request keys, manifests), and the driver never holds rows: their joins shuffle instead.
NO_BROADCAST_JOINS = {"spark.sql.autoBroadcastJoinThreshold": "-1",
                      "spark.sql.adaptive.autoBroadcastJoinThreshold": "-1"}


def without_broadcast_joins(fn):
    """Run ``fn(spark, ...)`` with ``NO_BROADCAST_JOINS``; the session's own settings come back after."""

    @functools.wraps(fn)
    def run(spark: SparkSession, *args, **kwargs):
        with session_conf(spark, NO_BROADCAST_JOINS):
            return fn(spark, *args, **kwargs)

    return run


def cores(spark: SparkSession) -> int:
    """Task slots of the cluster (``defaultParallelism``), or 2 where the session does not expose it."""
    try:
        return max(int(spark.sparkContext.defaultParallelism), 1)
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext
        return 2


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
