"""The only place that touches classic PySpark's JVM handles (``SparkContext``, ``.rdd``, ``_jdf``).

Each helper is an optimisation or a convenience with a fallback: over Spark Connect (or when the
handle is missing) it returns None or does nothing, and its caller takes the Connect-safe path.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession


def is_connect(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect client session."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def num_partitions(df: DataFrame) -> int | None:
    """Partitions of ``df``'s plan (classic only; planning it costs no job)."""
    if is_connect(df.sparkSession):
        return None
    try:
        return int(df.rdd.getNumPartitions())
    except Exception:  # noqa: BLE001
        return None


def default_parallelism(spark: SparkSession) -> int | None:
    """Task slots of the cluster (classic only)."""
    if is_connect(spark):
        return None
    try:
        return max(int(spark.sparkContext.defaultParallelism), 1)
    except Exception:  # noqa: BLE001
        return None


def plan_size_bytes(df: DataFrame) -> int | None:
    """The optimizer's size estimate of ``df`` (the files' bytes for Delta and Parquet scans), if known."""
    if is_connect(df.sparkSession):
        return None
    try:
        size = df._jdf.queryExecution().optimizedPlan().stats().sizeInBytes()
        size = size if isinstance(size, int) else int(size.toString())     # py4j may hand a Scala BigInt
    except Exception:  # noqa: BLE001 - a plan without statistics
        return None
    return None if size >= 2**63 - 1 else size


def set_log_level(spark: SparkSession, level: str) -> None:
    """The driver's log level (a Connect server keeps its own)."""
    if not is_connect(spark):
        spark.sparkContext.setLogLevel(level)


def sibling_session(spark: SparkSession) -> SparkSession:
    """A new session on the same application: same catalog and cluster, its own SQL settings and temp
    views. Classic: ``newSession()``; Connect: a new session id on the same server."""
    if not is_connect(spark):
        return spark.newSession()
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    return ConnectSession(connection=spark.client._builder)
