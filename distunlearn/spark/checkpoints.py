"""Freezing rows for the passes that follow: local checkpoints (blocks on the executors, the default) or,
with ``--checkpoint-dir``, reliable ones written to the session's checkpoint directory, which survive the
loss of an executor. Either way the rows never reach the driver; dropping the DataFrame releases them
(Spark's cleaner; Spark Connect releases a checkpoint when its DataFrame is garbage collected)."""
from __future__ import annotations

import os

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from distunlearn.errors import ParameterError

CHECKPOINT_DIR_CONF = "spark.checkpoint.dir"


def freeze(df: DataFrame, reliable: bool = False) -> DataFrame:
    """``df`` computed once and kept: bit-identical rows for every later pass."""
    if reliable:
        return df.checkpoint(eager=True)
    return df.localCheckpoint(True, StorageLevel.MEMORY_AND_DISK)


def normal_dir(path: str) -> str:
    """A directory as a comparable string: local paths absolute, URIs as given, no trailing slash."""
    if path.startswith("file:"):
        path = path[5:].lstrip("/")
        path = "/" + path
    elif "://" not in path:
        path = os.path.abspath(path)
    return path.rstrip("/")


def session_conf_for(checkpoint_dir: str) -> dict:
    """Startup settings of a local session whose reliable checkpoints go to ``checkpoint_dir`` and are
    deleted once unreferenced."""
    return {CHECKPOINT_DIR_CONF: normal_dir(checkpoint_dir), "spark.cleaner.referenceTracking.cleanCheckpoints": "true"}


def check_checkpoint_dir(spark: SparkSession, checkpoint_dir: str | None) -> None:
    """With ``--checkpoint-dir``, the session must have been started with that checkpoint directory (it is a
    cluster setting, not one a run may change)."""
    if checkpoint_dir is None:
        return
    configured = spark.conf.get(CHECKPOINT_DIR_CONF, None) or None
    if configured is None:
        raise ParameterError(f"{{checkpoint_dir}} {checkpoint_dir}: this Spark session has no {CHECKPOINT_DIR_CONF}; "
                             f"start the cluster (or spark-submit) with --conf {CHECKPOINT_DIR_CONF}={checkpoint_dir}",
                             "checkpoint_dir")
    if normal_dir(configured) != normal_dir(checkpoint_dir):
        raise ParameterError(f"{{checkpoint_dir}} {checkpoint_dir}: this Spark session checkpoints to {configured} "
                             f"({CHECKPOINT_DIR_CONF}); give that directory or none", "checkpoint_dir")
