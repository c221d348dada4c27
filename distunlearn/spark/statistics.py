"""One pass over the labelled rows: domain moments, the input checks and the unwanted rows to score."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_type

from distunlearn.core.moments import DomainMoments
from distunlearn.errors import DistunlearnError
from distunlearn.spark.classic import num_partitions
from distunlearn.spark.source import RETAINED, UNWANTED
from distunlearn.udfs.moments import SCHEMA, MomentsAccumulator, domain_scan, merge_moments

# The driver merges the moment rows of at most this many partitions (per partition: one row of d^2
# numbers per domain and a counters row); a source read in more partitions is merged on executors first.
DRIVER_PARTIALS = 16


@dataclass(frozen=True)
class DomainStatistics:
    """Both domains' moments and, when asked for, the unwanted rows not requested as (id, vec)."""

    unwanted: DomainMoments
    retained: DomainMoments
    unwanted_rows: DataFrame | None


def domain_statistics(labelled: DataFrame, id_col: str, vector_col: str,
                      keep_unwanted: bool = False) -> DomainStatistics:
    """Moments of the unwanted and retained domains, after rejecting bad input with one clear line.

    The source is read once: partitions emit one small row per domain, merged so that the driver never
    holds more than ``DRIVER_PARTIALS`` partitions' rows of d^2 numbers. With
    ``keep_unwanted`` the same read also keeps the unwanted rows (a local checkpoint on the executors,
    never the driver), so that scoring does not read the source a second time.
    """
    schema = labelled.schema
    scanned = labelled.select("id", "domain", "vec", "requested").mapInArrow(
        domain_scan(to_arrow_type(schema["id"].dataType), to_arrow_type(schema["vec"].dataType), keep_unwanted),
        f"kind int, id {schema['id'].dataType.simpleString()}, vec {schema['vec'].dataType.simpleString()}, "
        f"{SCHEMA}")
    if keep_unwanted:
        scanned = scanned.localCheckpoint(True, StorageLevel.MEMORY_AND_DISK)
    acc = _merged(scanned.where(F.col("kind") == 0).drop("kind", "id", "vec"))
    _check(acc, id_col, vector_col)
    if _has_duplicates(labelled):
        raise DistunlearnError(f"id column {id_col!r} has duplicate values; ids must be unique")
    dim = acc.max_dim
    rows = scanned.where(F.col("kind") == 1).select("id", "vec") if keep_unwanted else None
    return DomainStatistics(acc.moments.get(UNWANTED, DomainMoments.empty(dim)),
                            acc.moments.get(RETAINED, DomainMoments.empty(dim)), rows)


def _merged(partials: DataFrame) -> MomentsAccumulator:
    """Per-partition moments and input counters merged into one accumulator: on the driver, after one
    shuffle level on executors when there are more than ``DRIVER_PARTIALS`` partitions (or their number
    is unknown, as over Spark Connect)."""
    partitions = num_partitions(partials)
    if partitions is None or partitions > DRIVER_PARTIALS:
        partials = partials.repartition(DRIVER_PARTIALS).mapInArrow(merge_moments, SCHEMA)
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
