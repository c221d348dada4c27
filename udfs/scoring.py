"""Whiten and score the unwanted rows with every requested rule in one pass."""
from __future__ import annotations

import pyarrow as pa

from distunlearn.core.gaussian import PooledGaussian
from distunlearn.core.rules import score_rows
from distunlearn.udfs.vectors import from_matrix, to_matrix


def score_column(rule: str) -> str:
    return f"score_{rule}"


def scorer(model: PooledGaussian, rules: tuple[str, ...]):
    """mapInArrow: columns (id, vec, random_key) -> (id, y = whitened vec, one score per rule)."""
    names = ["id", "y", *map(score_column, rules)]

    def score(batches):
        for batch in batches:
            x = to_matrix(batch.column("vec"), model.dim)
            y = model.whiten(x)
            keys = batch.column("random_key").to_numpy(zero_copy_only=False)
            columns = [batch.column("id"), from_matrix(y)]
            columns += [pa.array(score_rows(rule, model, x, y, keys)) for rule in rules]
            yield pa.RecordBatch.from_arrays(columns, names=names)

    return score
