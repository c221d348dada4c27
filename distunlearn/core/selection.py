"""Exact smallest deletion budget for given KL thresholds.

Rows are deleted in score order (score descending, id ascending). In whitened coordinates
centred on mu1 (``PooledGaussian.whiten``), deleting the first f rows, whose whitened sum is
z_f, gives

    KL(p1 || p_f) = 0.5 ||n2 delta + z_f||^2 / (n1 + n2 - f)^2
    KL(p2 || p_f) = 0.5 ||z_f - (n1 - f) delta||^2 / (n1 + n2 - f)^2

with delta = W (mu1 - mu2). So every budget is evaluated from running sums; rows can be
scanned in independent ordered chunks once each chunk knows the count and sum before it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from distunlearn.core.gaussian import PooledGaussian
from distunlearn.errors import ParameterError


# Threshold comparisons tolerate rounding: a relative error of 1e-9 on either KL, and 1e-12 nats near zero.
RELATIVE_TOLERANCE = 1e-9
ABSOLUTE_TOLERANCE = 1e-12


def alpha_max(kappa: float, epsilon: float) -> float:
    """Closed-form Pareto frontier: the largest KL(p1||p_f) any edited mean reaches at epsilon."""
    return (math.sqrt(max(kappa, 0.0)) + math.sqrt(max(epsilon, 0.0))) ** 2


@dataclass(frozen=True)
class EditedKL:
    """KL(p1||p_f) and KL(p2||p_f) as functions of the budget f and the whitened sum z_f."""

    n1: int
    n2: int
    delta: np.ndarray

    @classmethod
    def from_model(cls, model: PooledGaussian) -> "EditedKL":
        return cls(model.n1, model.n2, model.delta)

    @property
    def kappa(self) -> float:
        return 0.5 * float(self.delta @ self.delta)

    def removal(self, f, z) -> np.ndarray:
        """KL(p1 || p_f) for budgets ``f`` (k,) with sums ``z`` (k, d)."""
        f = np.asarray(f, dtype=np.float64)
        v = z + self.n2 * self.delta
        return 0.5 * np.square(v).sum(axis=-1) / np.square(self.n1 + self.n2 - f)

    def preservation(self, f, z) -> np.ndarray:
        """KL(p2 || p_f) for budgets ``f`` (k,) with sums ``z`` (k, d)."""
        f = np.asarray(f, dtype=np.float64)
        v = z - np.multiply.outer(self.n1 - f, self.delta)
        return 0.5 * np.square(v).sum(axis=-1) / np.square(self.n1 + self.n2 - f)

    def at(self, f: int, z: np.ndarray) -> tuple[float, float]:
        """(removal, preservation) at one budget."""
        f_arr, z_arr = np.array([f]), np.asarray(z, dtype=np.float64)[None, :]
        return float(self.removal(f_arr, z_arr)[0]), float(self.preservation(f_arr, z_arr)[0])

    @property
    def before(self) -> tuple[float, float]:
        """(removal, preservation) with nothing deleted."""
        return self.at(0, np.zeros_like(self.delta))


@dataclass(frozen=True)
class Thresholds:
    """Removal target alpha and preservation bound epsilon, in nats."""

    alpha: float
    epsilon: float

    @classmethod
    def resolve(cls, kl: EditedKL, alpha=None, epsilon=None, alpha_rel=None, epsilon_rel=None) -> "Thresholds":
        """Nats from absolute or relative thresholds (METHOD.md): exactly one of each pair."""
        for name, value in (("alpha", alpha), ("epsilon", epsilon),
                            ("alpha_rel", alpha_rel), ("epsilon_rel", epsilon_rel)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ParameterError(f"{{{name}}} must be a finite number >= 0, got {value}", name)
        if (alpha is None) == (alpha_rel is None):
            raise ParameterError("give exactly one of {alpha} and {alpha_rel}", "alpha", "alpha_rel")
        if (epsilon is None) == (epsilon_rel is None):
            raise ParameterError("give exactly one of {epsilon} and {epsilon_rel}", "epsilon", "epsilon_rel")
        removal0, preservation0 = kl.before
        if alpha is None:
            alpha = removal0 + alpha_rel * (kl.kappa - removal0)
        if epsilon is None:
            epsilon = epsilon_rel * preservation0
        return cls(float(alpha), float(epsilon))

    def removal_met(self, removal):
        """KL(p1||p_f) >= alpha, up to ``RELATIVE_TOLERANCE`` (the one tolerance policy of selection,
        report and ``verify``): full removal reaches kappa only up to rounding."""
        return removal >= self.alpha * (1 - RELATIVE_TOLERANCE)

    def preservation_met(self, preservation):
        """KL(p2||p_f) <= epsilon, up to ``RELATIVE_TOLERANCE`` and ``ABSOLUTE_TOLERANCE`` nats (epsilon = 0
        is met by full removal, whose KL is 0 up to rounding)."""
        return preservation <= self.epsilon * (1 + RELATIVE_TOLERANCE) + ABSOLUTE_TOLERANCE

    def met(self, removal, preservation):
        return self.removal_met(removal) & self.preservation_met(preservation)


@dataclass(frozen=True)
class ChunkScan:
    """What one ordered chunk of rows says about the budgets ending inside it."""

    first_feasible: int | None   # smallest budget f ending in this chunk that meets both thresholds
    removal: float               # KL(p1||p_f) at that budget (nan when none)
    preservation: float          # KL(p2||p_f) at that budget (nan when none)
    best_alpha: float            # largest KL(p1||p_f) with KL(p2||p_f) <= epsilon in this chunk


def scan_chunk(batches: Iterable[np.ndarray], kl: EditedKL, thresholds: Thresholds,
               f0: int, z0: np.ndarray) -> ChunkScan:
    """Scan whitened rows in deletion order, given the count ``f0`` and sum ``z0`` before them."""
    f_done, z = int(f0), np.array(z0, dtype=np.float64)
    best_alpha = -math.inf
    for y in batches:
        if len(y) == 0:
            continue
        prefix = z + np.cumsum(y, axis=0)
        f = np.arange(f_done + 1, f_done + len(y) + 1)
        removal, preservation = kl.removal(f, prefix), kl.preservation(f, prefix)
        within = thresholds.preservation_met(preservation)
        if within.any():
            best_alpha = max(best_alpha, float(removal[within].max()))
        hit = np.flatnonzero(thresholds.met(removal, preservation))
        if hit.size:
            i = int(hit[0])
            return ChunkScan(int(f[i]), float(removal[i]), float(preservation[i]),
                             max(best_alpha, float(removal[i])))
        f_done, z = f_done + len(y), prefix[-1]
    return ChunkScan(None, math.nan, math.nan, best_alpha)


@dataclass(frozen=True)
class BudgetChoice:
    """The smallest budget of one rule, or why there is none."""

    rule: str
    deleted: int | None          # None: no budget of this rule meets both thresholds
    removal: float               # KL(p1||p_f) after deleting (nan when infeasible)
    preservation: float          # KL(p2||p_f) after deleting (nan when infeasible)
    best_alpha: float            # largest KL(p1||p_f) with KL(p2||p_f) <= epsilon (over all budgets when infeasible)

    @property
    def feasible(self) -> bool:
        return self.deleted is not None


@dataclass(frozen=True)
class Removed:
    """Rows removed before the selection starts (deletion requests): their count and whitened sum."""

    count: int
    z: np.ndarray

    @classmethod
    def nothing(cls, dim: int) -> "Removed":
        return cls(0, np.zeros(dim))


def choose_budget(rule: str, kl: EditedKL, thresholds: Thresholds, scans: Iterable[ChunkScan],
                  removed: Removed | None = None) -> BudgetChoice:
    """The smallest budget from the scans of the ordered chunks (in any order) and the empty deletion.

    Each chunk reports the first feasible budget ending inside it, so the smallest over chunks is
    the answer. Chunk budgets count ``removed`` rows too; the choice counts only the selected rows.
    """
    removed = removed or Removed.nothing(len(kl.delta))
    removal0, preservation0 = kl.at(removed.count, removed.z)
    best_alpha = removal0 if thresholds.preservation_met(preservation0) else -math.inf
    if thresholds.met(removal0, preservation0):
        return BudgetChoice(rule, 0, removal0, preservation0, best_alpha)
    first = None
    for scan in scans:
        best_alpha = max(best_alpha, scan.best_alpha)
        if scan.first_feasible is not None and (first is None or scan.first_feasible < first.first_feasible):
            first = scan
    if first is None:
        return BudgetChoice(rule, None, math.nan, math.nan, best_alpha)
    return BudgetChoice(rule, first.first_feasible - removed.count, first.removal, first.preservation, best_alpha)


def deletion_order(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Indices sorting rows by score descending, then id ascending."""
    return np.lexsort((ids, -np.asarray(scores, dtype=np.float64)))


def select_smallest_budget(rule: str, model: PooledGaussian, thresholds: Thresholds, whitened: np.ndarray,
                           scores: np.ndarray, ids: np.ndarray,
                           removed: Removed | None = None) -> tuple[BudgetChoice, np.ndarray]:
    """In-memory selection over the candidate unwanted rows: the choice and the deleted rows' indices."""
    kl = EditedKL.from_model(model)
    order = deletion_order(scores, ids)
    removed = removed or Removed.nothing(model.dim)
    scan = scan_chunk([whitened[order]], kl, thresholds, removed.count, removed.z)
    choice = choose_budget(rule, kl, thresholds, [scan], removed)
    return choice, order[: choice.deleted or 0]
