"""One pass over the labelled rows: domain moments plus the input checks, merged in a tree."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from distunlearn.core.moments import DomainMoments
from distunlearn.errors import DistunlearnError
from distunlearn.spark.source import RETAINED, UNWANTED
from distunlearn.udfs.moments import SCHEMA, MomentsAccumulator, merge_moments, partition_moments

MERGE_FAN_IN = 4


def domain_moments(labelled: DataFrame, id_col: str, vector_col: str) -> tuple[DomainMoments, DomainMoments]:
    """Moments of the unwanted and retained domains, after rejecting bad input with one clear line.

    Partitions emit one small row per domain; two shuffle levels merge them so that neither a
    single task nor the driver ever holds more than a few rows of d^2 numbers.
    """
    acc = merged_moments(labelled)
    _check(acc, id_col, vector_col)
    if _has_duplicates(labelled):
        raise DistunlearnError(f"id column {id_col!r} has duplicate values; ids must be unique")
    dim = acc.max_dim
    return acc.moments.get(UNWANTED, DomainMoments.empty(dim)), acc.moments.get(RETAINED, DomainMoments.empty(dim))


def merged_moments(labelled: DataFrame) -> MomentsAccumulator:
    """Per-partition moments and input counters, merged in two shuffle levels into one accumulator."""
    partials = labelled.select(F.col("id").isNull().alias("id_null"), "domain", "vec") \
        .mapInArrow(partition_moments, SCHEMA)
    merged = partials.repartition(MERGE_FAN_IN).mapInArrow(merge_moments, SCHEMA) \
        .repartition(1).mapInArrow(merge_moments, SCHEMA)
    acc = MomentsAccumulator()
    for row in merged.collect():
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


def _has_duplicates(labelled: DataFrame) -> bool:
    """Whether any id occurs twice; only a count reaches the driver, never an id."""
    return labelled.groupBy("id").count().where(F.col("count") > 1).limit(1).count() > 0
