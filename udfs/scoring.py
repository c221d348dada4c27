"""Whiten and score the unwanted rows with every requested rule in one pass."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from distunlearn.core.gaussian import PooledGaussian
from distunlearn.core.rules import score_rows
from distunlearn.udfs.vectors import from_matrix, to_matrix


def score_column(rule: str) -> str:
    return f"score_{rule}"


def scorer(model: PooledGaussian, rules: tuple[str, ...]):
    """mapInArrow: columns (id, vec, random_key) -> (id, vec, one score per rule). The vectors pass as they
    are stored (the passes in deletion order whiten them again, which costs less than storing them whitened)."""
    names = ["id", "vec", *map(score_column, rules)]

    def score(batches):
        for batch in batches:
            x = to_matrix(batch.column("vec"), model.dim)
            y = model.whiten(x)
            keys = batch.column("random_key").to_numpy(zero_copy_only=False)
            columns = [batch.column("id"), batch.column("vec")]
            columns += [pa.array(score_rows(rule, model, x, y, keys)) for rule in rules]
            yield pa.RecordBatch.from_arrays(columns, names=names)

    return score


REQUESTED_TOTALS_SCHEMA = "rows long, n long, z array<double>"


def requested_totals(model: PooledGaussian):
    """mapInArrow: requested rows (domain, vec) -> one row per partition: all requested rows, those in
    a domain, and the sum of their whitened vectors (what their removal does to the edited mean)."""

    def totals(batches):
        rows, n, z = 0, 0, np.zeros(model.dim)
        for batch in batches:
            rows += batch.num_rows
            in_domain = np.flatnonzero(batch.column("domain").is_valid().to_numpy(zero_copy_only=False))
            if len(in_domain):
                x = to_matrix(batch.column("vec").take(pa.array(in_domain)), model.dim)
                n, z = n + len(x), z + model.whiten(x).sum(axis=0)
        yield pa.RecordBatch.from_arrays([pa.array([rows], pa.int64()), pa.array([n], pa.int64()),
                                          from_matrix(z[None, :])], names=["rows", "n", "z"])

    return totals
