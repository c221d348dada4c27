"""Passes over the unwanted rows range-partitioned in deletion order (one chunk per partition).

Chunk k holds the rows ranked after every row of chunks < k, so a chunk only needs the count
and whitened sum of the chunks before it (``chunk_totals``, summed on the driver) to evaluate
every budget that ends inside it (``chunk_scanner``) and to rank its rows (``ranked_rows``).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark import TaskContext

from distunlearn.core.curves import sample_curve
from distunlearn.core.selection import EditedKL, Thresholds, scan_chunk
from distunlearn.udfs.vectors import from_matrix, to_matrix

TOTALS_SCHEMA = "chunk int, n long, z array<double>"
SCAN_SCHEMA = "chunk int, first_feasible long, removal double, preservation double, best_alpha double"
CURVE_SCHEMA = "f long, removal double, preservation double"


def _chunk() -> int:
    return TaskContext.get().partitionId()


def chunk_totals(dim: int):
    """mapInArrow: (y, ...) -> one row (chunk, row count, sum of y), also for an empty chunk."""

    def totals(batches):
        n, z = 0, np.zeros(dim)
        for batch in batches:
            y = to_matrix(batch.column("y"), dim)
            n, z = n + len(y), z + y.sum(axis=0)
        yield pa.RecordBatch.from_arrays([pa.array([_chunk()], pa.int32()), pa.array([n], pa.int64()),
                                          from_matrix(z[None, :])], names=["chunk", "n", "z"])

    return totals


def chunk_scanner(kl: EditedKL, thresholds: Thresholds, before: dict[int, tuple[int, np.ndarray]]):
    """mapInArrow: (y, ...) -> one ``ChunkScan`` row per chunk, given each chunk's (count, sum) before it."""
    dim = len(kl.delta)

    def scan(batches):
        chunk = _chunk()
        f0, z0 = before[chunk]
        result = scan_chunk((to_matrix(b.column("y"), dim) for b in batches), kl, thresholds, f0, z0)
        for _ in batches:  # drain what the scan did not need
            pass
        yield pa.RecordBatch.from_pylist([dict(
            chunk=chunk, first_feasible=result.first_feasible, removal=result.removal,
            preservation=result.preservation, best_alpha=result.best_alpha)],
            schema=pa.schema([("chunk", pa.int32()), ("first_feasible", pa.int64()), ("removal", pa.float64()),
                              ("preservation", pa.float64()), ("best_alpha", pa.float64())]))

    return scan


def chunk_curve(kl: EditedKL, before: dict[int, tuple[int, np.ndarray]], grid: np.ndarray):
    """mapInArrow: (y, ...) -> the KLs at the ``grid`` budgets that end inside each chunk."""
    dim = len(kl.delta)

    def curve(batches):
        f0, z0 = before[_chunk()]
        c = sample_curve((to_matrix(b.column("y"), dim) for b in batches), kl, f0, z0, grid)
        yield pa.RecordBatch.from_arrays([pa.array(c.f, pa.int64()), pa.array(c.removal, pa.float64()),
                                          pa.array(c.preservation, pa.float64())],
                                         names=["f", "removal", "preservation"])

    return curve


def ranked_rows(rows_before: dict[int, int], budget: int):
    """mapInArrow: (id, score, ...) -> (id, score, rank) for the rows ranked 1..budget."""

    def rank(batches):
        f = rows_before[_chunk()]
        for batch in batches:
            if f >= budget:
                continue
            take = min(batch.num_rows, budget - f)
            yield pa.RecordBatch.from_arrays(
                [batch.column("id").slice(0, take), batch.column("score").slice(0, take),
                 pa.array(np.arange(f + 1, f + take + 1, dtype=np.int64))], names=["id", "score", "rank"])
            f += take

    return rank
