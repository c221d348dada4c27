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
        """Moments of the rows of ``x`` (n x d), computed in float64 with a two-pass centring."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] == 0:
            return cls.empty(x.shape[1])
        mean = x.mean(axis=0)
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
