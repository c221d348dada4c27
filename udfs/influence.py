"""Arrow functions of the ``retrain_influence`` rule, run on the executors: per-task sums of the softmax
regression's Hessian and of the domain's gradient, and each row's influence score (``distunlearn.spark.influence``
says what they compute)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def _matrix(batch: pa.RecordBatch, name: str, width: int) -> np.ndarray:
    values = batch.column(batch.schema.get_field_index(name)).flatten()
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64).reshape(-1, width)


def _inputs(batch, k: int, d: int):
    x = _matrix(batch, "x", d)
    return x, np.c_[x, np.ones(len(x))], _matrix(batch, "p", k)


def _packed(v: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array([0, v.size], pa.int32()), pa.array(v.ravel(), pa.float64()))


def hessian_partials(k: int, d: int):
    def run(batches):
        h, sx, sxx, n = np.zeros((k, d + 1, k, d + 1)), np.zeros(d), np.zeros(d), 0
        for batch in batches:
            x, xt, p = _inputs(batch, k, d)
            for a in range(k):
                for c in range(a, k):
                    block = (xt * (p[:, a] * ((a == c) - p[:, c]))[:, None]).T @ xt
                    h[a, :, c, :] += block
                    if c != a:
                        h[c, :, a, :] += block.T
            sx, sxx, n = sx + x.sum(axis=0), sxx + np.square(x).sum(axis=0), n + len(x)
        yield pa.RecordBatch.from_arrays([pa.array([n], pa.int64()), _packed(sx), _packed(sxx), _packed(h)],
                                         ["n", "sx", "sxx", "h"])
    return run


def gradient_partials(k: int, d: int):
    def run(batches):
        g, n = np.zeros((k, d + 1)), 0
        for batch in batches:
            _, xt, p = _inputs(batch, k, d)
            y = batch.column(batch.schema.get_field_index("y")).to_numpy().astype(np.int64)
            own = p[np.arange(len(y)), y]
            g += (own[:, None] * (np.eye(k)[y] - p)).T @ xt
            n += len(y)
        yield pa.RecordBatch.from_arrays([pa.array([n], pa.int64()), _packed(g)], ["n", "g"])
    return run


def influence_scorer(v: np.ndarray, k: int, d: int):
    def run(batches):
        for batch in batches:
            _, xt, p = _inputs(batch, k, d)
            y = batch.column(batch.schema.get_field_index("y")).to_numpy().astype(np.int64)
            score = np.einsum("ik,ik->i", (p - np.eye(k)[y]) @ v, xt)
            yield pa.RecordBatch.from_arrays([batch.column(batch.schema.get_field_index("id")), pa.array(score)],
                                             ["id", "s"])
    return run
