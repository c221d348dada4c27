"""One local Spark session with Delta for the whole suite, and helpers that write real tables."""
from __future__ import annotations

import decimal

import numpy as np
import pyarrow as pa
import pytest

import reliability
from cluster import C1_ONLY
from connect_server import ConnectServer, hive_conf
from distunlearn.spark.checkpoints import session_conf_for
from distunlearn.spark.session import get_session, object_store_packages
from s3_server import S3Server


def pytest_configure(config):
    reliability.install(config)


# ``distunlearn unlearn`` flags for the short-lived driver processes the fault tests start and kill: two
# cores, the suite's small shuffle and log-replay parallelism, and a JVM that compiles with C1 only (no
# C2 compiler threads competing for the cores: such a run reaches its kill point about a fifth sooner).
# None of them decides a row of the deletion set.
SMALL_DRIVER_FLAGS = ["--master", "local[2]", "--spark-conf", "spark.sql.shuffle.partitions=4",
                      "--spark-conf", "spark.databricks.delta.snapshotPartitions=2",
                      "--spark-conf", "spark.sql.sources.parallelPartitionDiscovery.parallelism=4",
                      "--spark-conf", "spark.ui.enabled=false",
                      "--spark-conf", f"spark.driver.extraJavaOptions={C1_ONLY}"]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-API server (moto in server mode) on 127.0.0.1 for the whole suite."""
    with S3Server() as server:
        yield server


@pytest.fixture(scope="session")
def spark(tmp_path_factory, s3_server):
    """The suite's classic session, with Spark's own Hive metastore (embedded Derby) in a temp folder and
    Hadoop's S3A file system pointed at ``s3_server``."""
    metastore = tmp_path_factory.mktemp("metastore")
    session = get_session("distunlearn-tests", master="local[2]", packages=object_store_packages("s3a://"), conf={
        **s3_server.spark_conf(),
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "4",
        "spark.ui.enabled": "false",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "4",
        **hive_conf(metastore),
        # the parallel collector: on 2 cores G1's concurrent threads compete with the tasks (about 7% slower)
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={metastore} -XX:+UseParallelGC",
        **session_conf_for(str(tmp_path_factory.mktemp("checkpoints"))),   # for --checkpoint-dir
    })
    yield session
    session.stop()


@pytest.fixture(scope="session")
def connect_server(tmp_path_factory):
    """One Spark Connect server on 127.0.0.1 for the whole suite (Delta, its own Hive metastore)."""
    with ConnectServer(tmp_path_factory.mktemp("connect")) as server:
        yield server


@pytest.fixture(scope="session")
def connect_spark(connect_server):
    """A Spark Connect client session of ``connect_server`` (the server runs this venv's Python)."""
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    session = ConnectSession.builder.remote(connect_server.url).create()
    yield session
    session.stop()


def domain_table(x_unwanted: np.ndarray, x_retained: np.ndarray, id_type: str = "long",
                 vector_type: str = "float", x_neither: np.ndarray | None = None, seed: int = 0) -> pa.Table:
    """Rows of both domains (plus optional rows in neither) with shuffled ids and a payload column."""
    parts = [(x_unwanted, "unwanted"), (x_retained, "retained")]
    if x_neither is not None:
        parts.append((x_neither, "other"))
    x = np.vstack([p[0] for p in parts])
    topic = np.concatenate([np.full(len(p[0]), p[1], dtype=object) for p in parts])
    rng = np.random.default_rng(seed)
    raw_ids = rng.permutation(len(x)) * 3 + 7
    ids = {"long": pa.array(raw_ids, pa.int64()),
           "string": pa.array([f"user-{i:06d}" for i in raw_ids], pa.string()),
           "decimal": pa.array([decimal.Decimal(int(i)) / 100 for i in raw_ids], pa.decimal128(18, 2))}[id_type]
    element = pa.float32() if vector_type == "float" else pa.float64()
    flat = pa.array(x.astype(np.float32 if vector_type == "float" else np.float64).ravel(), element)
    vectors = pa.FixedSizeListArray.from_arrays(flat, x.shape[1]).cast(pa.list_(element))
    return pa.table({"id": ids, "topic": pa.array(topic, pa.string()), "payload": [f"p{i}" for i in range(len(x))],
                     "embedding": vectors})


def write_delta(spark, table: pa.Table, path, partitions: int = 3) -> str:
    spark.createDataFrame(table).repartition(partitions).write.format("delta").save(str(path))
    return str(path)
