"""The downstream objective's budget search: a coarse grid, then bisection, over a fine grid of budgets.

A budget is acceptable when a classifier retrained without the first ``budget`` rows of a rule's order
brings the forget-domain metric down to its target, keeps the retained-domain metric within its
tolerance, and the edit keeps KL(p2||p_f) <= epsilon. The metric comes from retraining, so it is noisy
and not strictly monotone in the budget: the search brackets the first acceptable point of the coarse
grid and bisects inside that bracket, assuming monotonicity only there; the report says how it bracketed.
Pure Python: ``fit`` (a batch of budgets -> their metrics) is the only link to Spark.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence


#: Intervals of the coarse grid (its points: one more) and fits per bisection round.
COARSE_INTERVALS = 8
FITS_PER_ROUND = 3


@dataclass(frozen=True)
class Fit:
    """Test-split metrics of a classifier retrained without the first ``budget`` rows of an order."""

    budget: int
    forget: float       # forget-domain accuracy (recall of the forgotten class)
    retained: float     # retained-domain accuracy
    seconds: float = 0.0


def forget_noise(test_rows: int) -> float:
    """The smallest drop of the forget metric (an accuracy on ``test_rows`` rows) that is not noise:
    1/sqrt(test_rows), two binomial standard errors at accuracy 0.5, where they are largest."""
    return 1.0 / math.sqrt(max(test_rows, 1))


@dataclass(frozen=True)
class Target:
    """What an acceptable fit reaches: forget metric <= ``forget_max``, retained metric >= ``retained_min``."""

    forget_max: float
    retained_min: float

    @classmethod
    def between(cls, all_data: Fit, full_removal: Fit, target: float, tolerance: float) -> "Target":
        """``target`` of the way from the all-data model's forget metric to the full-removal model's (0.5:
        halfway, the paper's "halve"); the retained metric may drop by ``tolerance`` from the all-data model's."""
        forget = all_data.forget + target * (full_removal.forget - all_data.forget)
        return cls(forget, all_data.retained - tolerance)

    def forgets(self, fit: Fit) -> bool:
        return fit.forget <= self.forget_max + 1e-12

    def met(self, fit: Fit) -> bool:
        return self.forgets(fit) and fit.retained >= self.retained_min - 1e-12


@dataclass
class Search:
    """One rule's search: every fit made, the coarse grid, the final bracket and the budget found."""

    budget: int | None = None
    fits: list[Fit] = field(default_factory=list)
    coarse: list[int] = field(default_factory=list)
    bracket: tuple[int, int] | None = None   # (largest budget known unacceptable, smallest acceptable)
    note: str = ""


def coarse_points(steps: int, intervals: int) -> list[int]:
    """Indices 0..steps of the fine grid at ``intervals`` even intervals."""
    return sorted({int(round(k * steps / intervals)) for k in range(intervals + 1)})


def search_budget(grid: Sequence[int], allowed: Sequence[bool], target: Target,
                  fit: Callable[[list[int]], list[Fit]], known: dict[int, Fit] | None = None,
                  intervals: int = COARSE_INTERVALS, parallel: int = FITS_PER_ROUND,
                  limit: int | None = None) -> Search:
    """The smallest acceptable budget of the fine ``grid`` (ascending budgets), searched.

    ``allowed[i]``: KL(p2||p_f) <= epsilon at ``grid[i]`` (a disallowed budget is never fitted).
    ``known`` fits (budget -> Fit) are reused, e.g. the all-data and full-removal models every rule shares.
    ``fit`` takes a batch of budgets and retrains at each (it may fit them at once); each bisection round
    fits ``parallel`` points, splitting the bracket in ``parallel + 1``. ``limit``: budgets above it cannot
    win (another rule already needs no more) and are not fitted.
    """
    known = dict(known or {})
    search = Search()
    steps = len(grid) - 1

    def reached(i: int) -> bool:
        return bool(allowed[i]) and target.forgets(known[grid[i]])

    def acceptable(i: int) -> bool:
        return bool(allowed[i]) and target.met(known[grid[i]])

    def fit_indices(indices) -> None:
        todo = sorted({grid[i] for i in indices if allowed[i] and grid[i] not in known})
        for result in fit(todo) if todo else []:
            known[result.budget] = result
            search.fits.append(result)

    def bisect(lo: int, hi: int, good) -> tuple[int, int]:
        """Narrow (lo not good, hi good] to adjacent grid points, ``parallel`` fits a round."""
        while hi - lo > 1:
            inner = sorted({lo + int(math.ceil(k * (hi - lo) / (parallel + 1))) for k in range(1, parallel + 1)}
                           - {lo, hi})
            fit_indices(inner)
            for i in inner:
                if good(i):
                    hi = i
                    break
                lo = i
        return lo, hi

    reach = [i for i in range(steps + 1) if allowed[i] and (limit is None or grid[i] <= limit)]
    if not reach:
        search.note = "no budget keeps KL(p2||p_f) <= epsilon" + ("" if limit is None else f" up to {limit}")
        return search
    # the last budget that could still be chosen closes the coarse grid
    capped = sorted({i for i in coarse_points(steps, intervals) if i <= reach[-1]} | {reach[-1]})
    search.coarse = [grid[i] for i in capped]
    fit_indices(capped)
    hits = [i for i in capped if reached(i)]
    if not hits:
        search.note = f"the forget-domain target is not reached at any of the coarse budgets {search.coarse}"
        return search
    # first the smallest budget that forgets enough, then (if the retained domain suffers there) the
    # first later coarse budget that also keeps the retained accuracy, bisected back
    lo = max([i for i in capped if i < hits[0]], default=None)
    lo, hi = bisect(lo, hits[0], reached) if lo is not None else (hits[0], hits[0])
    how = f"forgetting first reached in ({grid[lo]}, {grid[hi]}]"
    if not acceptable(hi):
        later = [i for i in capped if i > hi and acceptable(i)]
        if not later:
            search.note = (f"{how}, but the retained-domain accuracy is below "
                           f"{target.retained_min:.4g} there and at every later coarse budget")
            return search
        lo, hi = bisect(max([i for i in capped if i < later[0]] + [hi]), later[0], acceptable)
        how += f"; the retained accuracy holds first in ({grid[lo]}, {grid[hi]}]"
    search.budget, search.bracket = grid[hi], (grid[lo], grid[hi])
    search.note = f"coarse grid of {len(capped)} budgets, then bisection ({parallel} fits a round): {how}"
    return search
