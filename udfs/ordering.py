"""Passes over the unwanted rows in deletion order, in chunks of consecutive ranks.

Chunk k holds the rows ranked after every row of chunks < k, so a chunk only needs the count
and whitened sum of the chunks before it (``chunk_totals``, summed on the driver) to evaluate
every budget that ends inside it (``chunk_scanner``) and to rank its rows (``ranked_rows``).
Each row carries its chunk id in the column ``chunk``; a task may hold several chunks (after a
coalesce, say), each one's rows together and in order, and handles each on its own.

The rows come sorted by Spark with a ``score`` column, or (a rule given: one chunk of rows
``id, vec, random_key``) they are scored and sorted in the task (``ordered_chunks``; for several
rules at once, ``ordered_by_rules``), which then reports a digest of the order: every pass over the
same rows must see the same one.
"""
from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distunlearn.core.curves import sample_curve
from distunlearn.core.gaussian import PooledGaussian
from distunlearn.core.rules import score_rows
from distunlearn.core.selection import EditedKL, Thresholds, scan_chunk
from distunlearn.udfs.vectors import from_matrix, to_matrix

TOTALS_SCHEMA = "chunk int, n long, z array<double>"
SCAN_SCHEMA = ("chunk int, rule string, rows long, first_feasible long, removal double, preservation double, "
               "best_alpha double, digest string")
CURVE_SCHEMA = "f long, removal double, preservation double, rule string, digest string"
BATCH_ROWS = 8_192   # rows per batch of a chunk sorted in the task (bounds the prefix sums a scan holds)


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


def ordered_chunks(batches, model: PooledGaussian, rule: str | None):
    """(chunk id, its batches in deletion order with columns id and score, digest) for each chunk of a
    task. Without ``rule`` the rows come so (sorted by Spark; digest None); with it, each chunk's rows are
    scored by ``rule`` and sorted here (``deletion_order``)."""
    for chunk, parts in by_chunk(batches):
        if rule is None:
            yield chunk, parts, None
            continue
        table = pa.Table.from_batches(list(parts))
        x = to_matrix(table.column("vec"), model.dim)
        scores = score_rows(rule, model, x, model.whiten(x), table.column("random_key").to_numpy())
        order, digest = deletion_order(table.column("id"), scores)
        table = pa.table({"id": table.column("id").take(order), "score": scores[order]})
        yield chunk, table.to_batches(max_chunksize=BATCH_ROWS), digest


def ordered_by_rules(batches, model: PooledGaussian, rules: tuple[str, ...]):
    """(chunk id, rule, row count, the chunk's whitened rows in the rule's deletion order as arrays, digest)
    for each chunk of a task and each of ``rules``: the rows are whitened once, then scored and sorted per
    rule (``deletion_order``) as ``ordered_chunks`` sorts them."""
    for chunk, parts in by_chunk(batches):
        table = pa.Table.from_batches(list(parts))
        x = to_matrix(table.column("vec"), model.dim)
        y, keys = model.whiten(x), table.column("random_key").to_numpy()
        for rule in rules:
            order, digest = deletion_order(table.column("id"), score_rows(rule, model, x, y, keys))
            yield chunk, rule, len(order), (y[order[i:i + BATCH_ROWS]] for i in range(0, len(order), BATCH_ROWS)), \
                digest


def deletion_order(ids, scores: np.ndarray) -> tuple[np.ndarray, str]:
    """Row positions in deletion order as Spark sorts them (score descending, then id ascending), and the
    SHA-256 of the scores in that order (the digest every later pass must reproduce)."""
    order = pc.sort_indices(pa.table({"score": scores, "id": ids}),
                            sort_keys=[("score", "descending"), ("id", "ascending")]).to_numpy()
    return order, hashlib.sha256(scores[order].astype("<f8").tobytes()).hexdigest()


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
                  model: PooledGaussian, rules: tuple[str, ...] = ()):
    """mapInArrow: (chunk, ...) -> one ``ChunkScan`` row per chunk (with its rule, row count and order digest),
    given each chunk's (count, whitened sum) before it. Rows sorted by Spark (no ``rules``) give one row per
    chunk (rule null); rows ``id, vec, random_key`` give one per chunk and rule, each rule's order scored and
    sorted in the task (``ordered_by_rules``)."""
    schema = pa.schema([("chunk", pa.int32()), ("rule", pa.string()), ("rows", pa.int64()),
                        ("first_feasible", pa.int64()), ("removal", pa.float64()), ("preservation", pa.float64()),
                        ("best_alpha", pa.float64()), ("digest", pa.string())])

    def row(chunk, rule, rows, result, digest):
        return pa.RecordBatch.from_pylist([dict(
            chunk=chunk, rule=rule, rows=rows, first_feasible=result.first_feasible, removal=result.removal,
            preservation=result.preservation, best_alpha=result.best_alpha, digest=digest)], schema=schema)

    def scan(batches):
        if rules:
            for chunk, rule, rows, ordered, digest in ordered_by_rules(batches, model, rules):
                f0, z0 = before[chunk]
                yield row(chunk, rule, rows, scan_chunk(ordered, kl, thresholds, f0, z0), digest)
            return
        for chunk, parts in by_chunk(batches):
            counted = _Counted(parts)
            f0, z0 = before[chunk]
            result = scan_chunk(whitened(model, counted), kl, thresholds, f0, z0)
            for _ in counted:  # count what the scan did not need
                pass
            yield row(chunk, None, counted.rows, result, None)

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


def chunk_curve(kl: EditedKL, before: dict[int, tuple[int, np.ndarray]], grid: np.ndarray, model: PooledGaussian,
                rules: tuple[str, ...] = ()):
    """mapInArrow: (chunk, ...) -> the KLs at the ``grid`` budgets that end inside each chunk, with their rule
    and the chunk's order digest; rows and ``rules`` as for ``chunk_scanner``."""

    def sampled(c, rule, digest):
        n = len(c.f)
        return pa.RecordBatch.from_arrays([pa.array(c.f, pa.int64()), pa.array(c.removal, pa.float64()),
                                           pa.array(c.preservation, pa.float64()), pa.array([rule] * n, pa.string()),
                                           pa.array([digest] * n, pa.string())],
                                          names=["f", "removal", "preservation", "rule", "digest"])

    def curve(batches):
        if rules:
            for chunk, rule, _, ordered, digest in ordered_by_rules(batches, model, rules):
                f0, z0 = before[chunk]
                yield sampled(sample_curve(ordered, kl, f0, z0, grid), rule, digest)
            return
        for chunk, parts in by_chunk(batches):
            f0, z0 = before[chunk]
            yield sampled(sample_curve(whitened(model, parts), kl, f0, z0, grid), None, None)

    return curve


def ranked_rows(rows_before: dict[int, int], budget: int, model: PooledGaussian, rule: str | None = None,
                digest: str | None = None):
    """mapInArrow: (chunk, ...) -> (id, score, rank) for the rows ranked 1..budget. Rows sorted in the task
    must be in the order whose ``digest`` (when given) the budget was chosen on, else the task fails and
    nothing is written from it."""

    def rank(batches):
        for chunk, parts, seen in ordered_chunks(batches, model, rule):
            if digest is not None and seen != digest:
                raise RuntimeError(f"the deletion order of chunk {chunk} differs from the one its budget was "
                                   f"chosen on (digest {seen} != {digest}); nothing is deleted")
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
