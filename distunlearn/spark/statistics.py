"""One pass over the labelled rows: domain moments, the input checks and the unwanted rows to score."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_type

from distunlearn.core.moments import DomainMoments
from distunlearn.errors import DistunlearnError
from distunlearn.spark.checkpoints import freeze
from distunlearn.spark.session import run_session_reading
from distunlearn.spark.source import RETAINED, UNWANTED
from distunlearn.udfs.moments import (ID_RUN, IDS_UNORDERED, KEPT, PARTIAL, SCHEMA, MomentsAccumulator,
                                      domain_scan, merge_moments)

# Every scan task emits one partial per domain (count, mean, packed upper triangle of the scatter: about
# 4 d^2 bytes) and a counters row. The driver merges them itself while they take at most DRIVER_BYTES;
# beyond that a tree of merge tasks on the executors reduces them level by level, each task reading about
# TASK_BYTES of partials (at least MIN_FAN_IN of them) in Arrow batches of at most BATCH_BYTES (at least one
# partial), so that no task holds more than the merged moments, one batch and one partial being added.
DRIVER_BYTES = 64 * 1024 * 1024
TASK_BYTES = 512 * 1024 * 1024
BATCH_BYTES = 64 * 1024 * 1024
MIN_FAN_IN = 16
ROWS_PER_TASK = 3   # a merge task's output: one partial per domain and a counters row


@dataclass(frozen=True)
class DomainStatistics:
    """Both domains' moments, the longest string id in bytes (0 for other id types) and, when asked for,
    the unwanted rows not requested as (id, vec) and how many they are."""

    unwanted: DomainMoments
    retained: DomainMoments
    unwanted_rows: DataFrame | None
    id_bytes: int = 0
    kept: int = 0


def domain_statistics(labelled: DataFrame, id_col: str, vector_col: str,
                      keep_unwanted: bool = False, reliable: bool = False) -> DomainStatistics:
    """Moments of the unwanted and retained domains, after rejecting bad input with one clear line.

    The source is read once: partitions emit one row per domain, merged so that the driver never holds
    more than ``DRIVER_BYTES`` of them (``merge_levels``), and their runs of increasing ids, which prove
    the ids unique without a shuffle when their ranges do not meet (else ids are counted by a shuffle).
    With ``keep_unwanted`` the same read also keeps the unwanted rows (a checkpoint, ``reliable`` or
    local, never on the driver), so that scoring does not read the source a second time.
    """
    schema = labelled.schema
    id_type, vec_type = schema["id"].dataType.simpleString(), schema["vec"].dataType.simpleString()
    scanned = labelled.select("id", "domain", "vec", "requested").mapInArrow(
        domain_scan(to_arrow_type(schema["id"].dataType), to_arrow_type(schema["vec"].dataType), keep_unwanted),
        f"kind int, id {id_type}, id_to {id_type}, vec {vec_type}, {SCHEMA}")
    scanned = freeze(scanned, reliable)
    summary = scanned.where(F.col("kind") != KEPT)
    facts = _summary_facts(summary)
    acc = _merged(summary.where(F.col("kind") == PARTIAL).drop("kind", "id", "id_to", "vec"),
                  facts["partials"], facts["raw"], facts["bytes"])
    _check(acc, id_col, vector_col)
    if not facts["ids_in_disjoint_runs"] and _has_duplicates(labelled):
        raise DistunlearnError(f"id column {id_col!r} has duplicate values; ids must be unique")
    dim = acc.max_dim
    rows = scanned.where(F.col("kind") == KEPT).select("id", "vec") if keep_unwanted else None
    return DomainStatistics(acc.domain(UNWANTED, dim), acc.domain(RETAINED, dim), rows, acc.id_bytes, acc.kept)


def _summary_facts(summary: DataFrame):
    """One aggregate over the scan's summary rows: how many partials, whether any carries rows, the largest
    one's bytes, and whether the id runs of all partitions lie in ranges that do not meet (no
    partition gave up, and after sorting by first id each run ends before the next begins)."""
    kind = F.col("kind")
    runs = F.array_sort(F.collect_list(F.when(kind == ID_RUN, F.struct(F.col("id").alias("first"),
                                                                        F.col("id_to").alias("last")))))
    facts = summary.agg(F.count(F.when(kind == PARTIAL, 1)).alias("partials"), F.max("raw_rows").alias("raw"),
                        F.max(F.octet_length("m2") + F.octet_length("mean")).alias("bytes"),
                        F.count(F.when(kind == IDS_UNORDERED, 1)).alias("unordered"), runs.alias("runs"))
    runs = F.col("runs")
    meet = F.when(F.size(runs) >= 2, F.exists(F.sequence(F.lit(2), F.size(runs)), lambda i: (
        F.try_element_at(runs, i - 1)["last"] >= F.try_element_at(runs, i)["first"])))
    disjoint = (F.col("unordered") == 0) & ~F.coalesce(meet, F.lit(False))
    return facts.select("partials", "raw", "bytes", disjoint.alias("ids_in_disjoint_runs")).first()


def merge_levels(rows: int, row_bytes: int) -> list[int]:
    """Tasks of each level of the merge tree for ``rows`` partials of up to ``row_bytes`` each: none when the
    driver can take them all, else levels of ``ceil(rows / fan_in)`` tasks until it can."""
    fan_in = max(MIN_FAN_IN, TASK_BYTES // max(row_bytes, 1))
    levels: list[int] = []
    while rows * row_bytes > DRIVER_BYTES and rows > ROWS_PER_TASK:
        tasks = math.ceil(rows / fan_in)
        tasks = tasks if ROWS_PER_TASK * tasks < rows else 1
        levels.append(tasks)
        rows = ROWS_PER_TASK * tasks
    return levels


def _merged(partials: DataFrame, rows: int, raw: int | None, max_bytes: int | None) -> MomentsAccumulator:
    """The ``rows`` partials and input counters merged into one accumulator: by the driver, after the
    levels of the merge tree (``merge_levels``) on executors when there are too many or some carry rows
    (``raw``). The tree runs in a session of its own whose Arrow batch size is set for the partials' size
    (``max_bytes`` at most); they reach it as a global temporary view."""
    row_bytes = (max_bytes or 0) + 256
    # partials that carry rows are merged on an executor first: vectors never reach the driver
    levels = merge_levels(rows, row_bytes) or ([1] if raw else [])
    if levels:
        batch_rows = str(max(1, BATCH_BYTES // row_bytes))
        with run_session_reading(partials, {"spark.sql.execution.arrow.maxRecordsPerBatch": batch_rows},
                                 "distunlearn_partials") as (session, view):
            merged = session.table(view)
            for tasks in levels:
                merged = merged.repartition(tasks).mapInArrow(merge_moments, SCHEMA)
            return _collected(merged)
    return _collected(partials)


def _collected(partials: DataFrame) -> MomentsAccumulator:
    acc = MomentsAccumulator()
    for row in partials.collect():
        acc.add_row(row.asDict())
    return acc


def _check(acc: MomentsAccumulator, id_col: str, vector_col: str) -> None:
    if acc.null_ids:
        raise DistunlearnError(f"{acc.null_ids} row(s) have a null id in column {id_col!r}")
    if acc.max_dim < 0 and acc.null_vectors == 0:
        raise DistunlearnError("no row is in the unwanted or retained domain (is the source empty?)")
    if acc.null_vectors:
        raise DistunlearnError(f"{acc.null_vectors} row(s) have a null vector in column {vector_col!r}")
    if acc.min_dim != acc.max_dim:
        raise DistunlearnError(f"ragged vectors in column {vector_col!r}: lengths from {acc.min_dim} "
                               f"to {acc.max_dim}; every row must have the same dimension")
    if acc.max_dim == 0:
        raise DistunlearnError(f"zero-length vectors in column {vector_col!r}")
    if acc.nonfinite:
        raise DistunlearnError(f"{acc.nonfinite} row(s) have NaN, Inf or null values in vector column {vector_col!r}")
    if acc.too_large:
        raise DistunlearnError(
            f"{acc.too_large} row(s) of vector column {vector_col!r} hold values too large for float64 moments "
            f"(|x| up to {acc.largest:.3g}, e.g. {id_col} {acc.example_id}): their squares overflow, so the "
            f"covariance is not finite; rescale or drop those rows (a ridge cannot help)")
    for moments in acc.moments.values():
        if not (np.isfinite(moments.mean).all() and np.isfinite(moments.m2).all()):
            raise DistunlearnError(f"the moments of vector column {vector_col!r} are not finite (values too large "
                                   f"for float64 sums of squares); rescale the vectors")


def _has_duplicates(labelled: DataFrame) -> bool:
    """Whether any id occurs twice; only a count reaches the driver, never an id."""
    return (labelled.groupBy("id").count().agg(F.max("count")).first()[0] or 0) > 1
