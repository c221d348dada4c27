"""Passes over the unwanted rows in deletion order, in chunks of consecutive ranks.

Chunk k holds the rows ranked after every row of chunks < k, so a chunk only needs the count
and whitened sum of the chunks before it (``chunk_totals``, summed on the driver) to evaluate
every budget that ends inside it (``chunk_scanner``) and to rank its rows (``ranked_rows``).
Each row carries its chunk id in the column ``chunk``; a task may hold several chunks (after a
coalesce, say), each one's rows together and in order, and handles each on its own.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import itertools

from distunlearn.core.curves import sample_curve
from distunlearn.core.gaussian import PooledGaussian
from distunlearn.core.selection import EditedKL, Thresholds, scan_chunk
from distunlearn.udfs.vectors import from_matrix, to_matrix

TOTALS_SCHEMA = "chunk int, n long, z array<double>"
SCAN_SCHEMA = ("chunk int, rows long, first_feasible long, removal double, preservation double, "
               "best_alpha double")
CURVE_SCHEMA = "f long, removal double, preservation double"


def _slices(batches):
    """(chunk, batch) runs of one chunk id each, in the order the rows arrive."""
    for batch in batches:
        chunks = batch.column("chunk").to_numpy(zero_copy_only=False)
        bounds = [0, *(np.flatnonzero(np.diff(chunks)) + 1).tolist(), len(chunks)]
        for start, end in zip(bounds[:-1], bounds[1:]):
            if end > start:
                yield int(chunks[start]), batch.slice(start, end - start)


def by_chunk(batches):
    """(chunk id, iterator over that chunk's batches) for each chunk in the task's rows."""
    for chunk, runs in itertools.groupby(_slices(batches), key=lambda run: run[0]):
        yield chunk, (batch for _, batch in runs)


def whitened(model: PooledGaussian, batches):
    """The whitened rows of each batch's ``vec`` column."""
    for batch in batches:
        yield model.whiten(to_matrix(batch.column("vec"), model.dim))


def chunk_totals(model: PooledGaussian):
    """mapInArrow: (chunk, vec, ...) -> one row per chunk: (chunk, row count, sum of the whitened rows)."""
    dim = model.dim

    def totals(batches):
        for chunk, parts in by_chunk(batches):
            n, z = 0, np.zeros(dim)
            for y in whitened(model, parts):
                n, z = n + len(y), z + y.sum(axis=0)
            yield pa.RecordBatch.from_arrays([pa.array([chunk], pa.int32()), pa.array([n], pa.int64()),
                                              from_matrix(z[None, :])], names=["chunk", "n", "z"])

    return totals


def chunk_scanner(kl: EditedKL, thresholds: Thresholds, before: dict[int, tuple[int, np.ndarray]],
                  model: PooledGaussian):
    """mapInArrow: (chunk, vec, ...) -> one ``ChunkScan`` row per chunk (with its row count), given each
    chunk's (count, whitened sum) before it."""
    schema = pa.schema([("chunk", pa.int32()), ("rows", pa.int64()), ("first_feasible", pa.int64()),
                        ("removal", pa.float64()), ("preservation", pa.float64()), ("best_alpha", pa.float64())])

    def scan(batches):
        for chunk, parts in by_chunk(batches):
            counted = _Counted(parts)
            f0, z0 = before[chunk]
            result = scan_chunk(whitened(model, counted), kl, thresholds, f0, z0)
            for _ in counted:  # count what the scan did not need
                pass
            yield pa.RecordBatch.from_pylist([dict(
                chunk=chunk, rows=counted.rows, first_feasible=result.first_feasible, removal=result.removal,
                preservation=result.preservation, best_alpha=result.best_alpha)], schema=schema)

    return scan


class _Counted:
    """An iterator over batches that counts their rows."""

    def __init__(self, batches):
        self.batches, self.rows = iter(batches), 0

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.batches)
        self.rows += batch.num_rows
        return batch


def chunk_curve(kl: EditedKL, before: dict[int, tuple[int, np.ndarray]], grid: np.ndarray, model: PooledGaussian):
    """mapInArrow: (chunk, vec, ...) -> the KLs at the ``grid`` budgets that end inside each chunk."""

    def curve(batches):
        for chunk, parts in by_chunk(batches):
            f0, z0 = before[chunk]
            c = sample_curve(whitened(model, parts), kl, f0, z0, grid)
            yield pa.RecordBatch.from_arrays([pa.array(c.f, pa.int64()), pa.array(c.removal, pa.float64()),
                                              pa.array(c.preservation, pa.float64())],
                                             names=["f", "removal", "preservation"])

    return curve


def ranked_rows(rows_before: dict[int, int], budget: int):
    """mapInArrow: (chunk, id, score, ...) -> (id, score, rank) for the rows ranked 1..budget."""

    def rank(batches):
        for chunk, parts in by_chunk(batches):
            f = rows_before[chunk]
            for batch in parts:
                if f >= budget:
                    continue
                take = min(batch.num_rows, budget - f)
                yield pa.RecordBatch.from_arrays(
                    [batch.column("id").slice(0, take), batch.column("score").slice(0, take),
                     pa.array(np.arange(f + 1, f + take + 1, dtype=np.int64))], names=["id", "score", "rank"])
                f += take

    return rank
