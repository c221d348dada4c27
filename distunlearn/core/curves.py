"""Budget curves: KL(p1||p_f) and KL(p2||p_f) over the budget f, the halving budget and the frontier.

A rule's curve is sampled at a grid of budgets from the running whitened sums of its deletion
order (``EditedKL``), so a whole curve costs one scan of the ordered rows. Random deletion is
not sampled: its expected KLs have a closed form (``RandomExpectation``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from distunlearn.core.selection import EditedKL, Thresholds


@dataclass(frozen=True)
class Curve:
    """KL values of one rule at budgets ``f`` (ascending)."""

    f: np.ndarray
    removal: np.ndarray
    preservation: np.ndarray

    @classmethod
    def concat(cls, parts: Iterable["Curve"]) -> "Curve":
        parts = list(parts)
        f = np.concatenate([p.f for p in parts]).astype(np.int64)
        order = np.argsort(f, kind="stable")
        return cls(f[order], np.concatenate([p.removal for p in parts])[order],
                   np.concatenate([p.preservation for p in parts])[order])


def budget_grid(n1: int, steps: int) -> np.ndarray:
    """The budgets 0, n1/steps, ..., n1 (``steps`` + 1 of them, rounded to rows; fewer when rows repeat)."""
    if steps < 1:
        raise ValueError("a curve needs at least 1 step")
    return np.unique(np.rint(np.linspace(0, n1, steps + 1)).astype(np.int64))


def halving_thresholds(kl: EditedKL) -> Thresholds:
    """alpha halfway from KL(p1||p_0) to full removal (kappa), no preservation bound: the paper's "halve"."""
    removal0, _ = kl.before
    return Thresholds(removal0 + 0.5 * (kl.kappa - removal0), math.inf)


def sample_curve(batches: Iterable[np.ndarray], kl: EditedKL, f0: int, z0: np.ndarray,
                 grid: np.ndarray) -> Curve:
    """KLs at the ``grid`` budgets ending inside these whitened rows (deletion order), which
    follow ``f0`` rows whose whitened sum is ``z0``."""
    f_done, z = int(f0), np.array(z0, dtype=np.float64)
    fs, sums = [], []
    for y in batches:
        if len(y) == 0:
            continue
        inside = grid[(grid > f_done) & (grid <= f_done + len(y))]
        if inside.size:
            prefix = z + np.cumsum(y, axis=0)
            fs.append(inside)
            sums.append(prefix[inside - f_done - 1])
            z = prefix[-1]
        else:
            z = z + y.sum(axis=0)
        f_done += len(y)
    if not fs:
        empty = np.zeros(0)
        return Curve(np.zeros(0, np.int64), empty, empty)
    f, zs = np.concatenate(fs), np.vstack(sums)
    return Curve(f, kl.removal(f, zs), kl.preservation(f, zs))


@dataclass(frozen=True)
class RandomExpectation:
    """Expected KLs when f rows drawn uniformly without replacement from the unwanted domain are deleted.

    Whitened around mu1 the unwanted rows sum to zero, so the deleted sum z_f has mean 0 and
    E||z_f||^2 = f (n1 - f) / (n1 (n1 - 1)) * spread, with spread = sum ||W (x - mu1)||^2 =
    trace(W M2 W^T) over the unwanted rows. The KLs are quadratic in z_f, hence exact expectations.
    """

    kl: EditedKL
    spread: float

    @classmethod
    def from_scatter(cls, kl: EditedKL, whitener: np.ndarray, scatter: np.ndarray) -> "RandomExpectation":
        """From the unwanted domain's centred scatter matrix M2 (``DomainMoments.m2``)."""
        return cls(kl, float(np.trace(whitener @ scatter @ whitener.T)))

    def _second_moment(self, f: np.ndarray) -> np.ndarray:
        n1 = self.kl.n1
        return f * (n1 - f) / (n1 * max(n1 - 1, 1)) * self.spread

    def curve(self, f) -> Curve:
        f = np.asarray(f, dtype=np.int64)
        ff = f.astype(np.float64)
        kl, d2 = self.kl, float(self.kl.delta @ self.kl.delta)
        denom = np.square(kl.n1 + kl.n2 - ff)
        ez2 = self._second_moment(ff)
        removal = 0.5 * (kl.n2 ** 2 * d2 + ez2) / denom
        preservation = 0.5 * (np.square(kl.n1 - ff) * d2 + ez2) / denom
        return Curve(f, removal, preservation)

    def first_reaching(self, alpha: float, block: int = 1 << 20) -> int | None:
        """The smallest f whose expected KL(p1||p_f) reaches ``alpha``, scanning budgets in blocks."""
        for start in range(0, self.kl.n1 + 1, block):
            f = np.arange(start, min(start + block, self.kl.n1 + 1))
            hit = np.flatnonzero(self.curve(f).removal >= alpha)
            if hit.size:
                return int(f[hit[0]])
        return None


def empirical_frontier(curves: Iterable[Curve]) -> tuple[np.ndarray, np.ndarray]:
    """The upper envelope of every sampled (KL(p2||p_f), KL(p1||p_f)) point: for each preservation
    level, the largest removal any sampled deletion reached without exceeding it."""
    curves = list(curves)
    preservation = np.concatenate([c.preservation for c in curves])
    removal = np.concatenate([c.removal for c in curves])
    order = np.lexsort((-removal, preservation))
    preservation, best = preservation[order], np.maximum.accumulate(removal[order])
    keep = np.r_[True, best[1:] > best[:-1]] if len(best) else np.zeros(0, bool)
    return preservation[keep], best[keep]


def halfway_fraction(fractions, metric) -> float | None:
    """The deleted fraction at which ``metric`` first moves halfway from its value at fraction 0 (all
    data) to its value at fraction 1 (full removal), interpolated linearly between grid points.

    ``fractions`` ascending, starting at 0 and ending at 1. None when the metric does not move.
    """
    x, y = np.asarray(fractions, dtype=np.float64), np.asarray(metric, dtype=np.float64)
    if x[0] != 0 or x[-1] != 1:
        raise ValueError("the grid must start at 0 (all data) and end at 1 (full removal)")
    change = y[-1] - y[0]
    if change == 0:
        return None
    moved = (y - y[0]) / change  # 0 at all data, 1 at full removal
    hit = int(np.flatnonzero(moved >= 0.5)[0])
    if hit == 0:
        return 0.0
    x0, x1, m0, m1 = x[hit - 1], x[hit], moved[hit - 1], moved[hit]
    return float(x0 + (0.5 - m0) / (m1 - m0) * (x1 - x0))
