"""Sufficient statistics of one domain: count, mean and centred second moment."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DomainMoments:
    """Count ``n``, mean vector and centred scatter matrix ``m2 = sum (x-mean)(x-mean)^T``.

    Kept centred (not raw sums) so that merging stays exact when every coordinate carries a
    large common offset; merging uses the pairwise update of Chan, Golub and LeVeque.
    """

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> "DomainMoments":
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    @classmethod
    def from_rows(cls, x: np.ndarray) -> "DomainMoments":
        """Moments of the rows of ``x`` (n x d, float32 or float64), computed in float64 with a two-pass
        centring (float32 rows become float64 as they are centred, without a copy of their own)."""
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        if x.shape[0] == 0:
            return cls.empty(x.shape[1])
        mean = x.mean(axis=0, dtype=np.float64)
        centred = x - mean
        return cls(int(x.shape[0]), mean, centred.T @ centred)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def merge(self, other: "DomainMoments") -> "DomainMoments":
        """Moments of the union of both row sets."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        return DomainMoments(n, mean, m2)

    @property
    def total(self) -> np.ndarray:
        """Sum of the rows."""
        return self.mean * self.n


def merge_all(parts) -> DomainMoments | None:
    """Merge an iterable of moments pairwise (balanced tree), or None when it is empty."""
    level = [p for p in parts]
    if not level:
        return None
    while len(level) > 1:
        level = [level[i].merge(level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


def packed_length(dim: int) -> int:
    """Numbers in the upper triangle (diagonal included) of a dim x dim matrix."""
    return dim * (dim + 1) // 2


def _row_starts(dim: int) -> np.ndarray:
    """Offset of row i's upper part (columns i..dim-1) in the packed triangle."""
    i = np.arange(dim + 1, dtype=np.int64)
    return i * dim - i * (i - 1) // 2


def pack_upper(matrix: np.ndarray) -> np.ndarray:
    """The upper triangle of a symmetric matrix, row by row, as one float64 vector."""
    dim = matrix.shape[0]
    return np.concatenate([matrix[i, i:] for i in range(dim)]) if dim else np.zeros(0)


def unpack_upper(packed: np.ndarray, dim: int) -> np.ndarray:
    """The symmetric dim x dim matrix whose upper triangle is ``packed`` (as ``pack_upper`` lays it out)."""
    matrix = np.empty((dim, dim))
    starts = _row_starts(dim)
    for i in range(dim):
        matrix[i, i:] = packed[starts[i]:starts[i + 1]]
        matrix[i + 1:, i] = matrix[i, i + 1:]
    return matrix


@dataclass
class PackedMoments:
    """``DomainMoments`` with the scatter matrix kept as its packed upper triangle (``pack_upper``), merged
    in place: merging a stream of partials holds one accumulator and one partial, whatever their number."""

    n: int
    mean: np.ndarray
    m2: np.ndarray   # packed upper triangle

    @classmethod
    def of(cls, moments: DomainMoments) -> "PackedMoments":
        return cls(moments.n, moments.mean.copy(), pack_upper(moments.m2))

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def merge(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        """Add another row set's moments (``m2`` packed) by the same pairwise update as ``DomainMoments``."""
        if n == 0:
            return
        if self.n == 0:
            self.n, self.mean, self.m2 = n, mean.copy(), m2.copy()
            return
        total = self.n + n
        delta = mean - self.mean
        weight = self.n * n / total
        self.m2 += m2
        starts = _row_starts(self.dim)
        for i in range(self.dim):   # += weight * outer(delta, delta), upper triangle, row by row
            self.m2[starts[i]:starts[i + 1]] += (weight * delta[i]) * delta[i:]
        self.mean = self.mean + delta * (n / total)
        self.n = total

    def unpacked(self) -> DomainMoments:
        return DomainMoments(self.n, self.mean, unpack_upper(self.m2, self.dim))
