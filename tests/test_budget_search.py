"""The downstream budget search against an exhaustive scan of the same grid (no Spark)."""
from __future__ import annotations

import numpy as np
import pytest

from distunlearn.core.budget_search import Fit, Target, search_budget


def exhaustive(grid, allowed, target, fits):
    return next((b for b, ok in zip(grid, allowed) if ok and target.met(fits[b])), None)


def fitter(metric, made):
    def fit(budgets):
        made.append(list(budgets))
        return [Fit(b, *metric(b)) for b in budgets]
    return fit


@pytest.mark.parametrize("seed", range(40))
def test_search_equals_exhaustive_scan_when_the_metric_falls_monotonically(seed):
    rng = np.random.default_rng(seed)
    n1 = int(rng.integers(5, 3000))
    grid = sorted({int(round(k * n1 / 100)) for k in range(101)})
    forget = np.sort(rng.random(len(grid)))[::-1]           # recall falls as rows are deleted
    retained = 0.95 - 0.03 * np.sort(rng.random(len(grid)))  # retained accuracy falls a little
    cut = int(rng.integers(0, len(grid) + 1))
    allowed = [i < cut for i in range(len(grid))]   # KL(p2||p_f) <= epsilon up to a point
    metric = dict(zip(grid, zip(forget, retained)))
    made = []
    target = Target.between(Fit(0, *metric[0]), Fit(n1, *metric[n1]), rng.uniform(0.2, 0.9), 0.01)
    search = search_budget(grid, allowed, target, fitter(lambda b: metric[b], made))
    fits = {b: Fit(b, *metric[b]) for b in grid}
    expected = exhaustive(grid, allowed, target, fits)
    assert search.budget == expected
    fitted = [b for batch in made for b in batch]
    assert len(fitted) == len(set(fitted)) == len(search.fits) <= 10 + 3 * 4   # each budget fitted once
    assert all(allowed[grid.index(b)] for b in fitted)                      # never a budget over epsilon


def test_noisy_metric_stays_within_the_bracket_and_reports_it():
    rng = np.random.default_rng(3)
    grid = list(range(0, 1001, 10))
    noisy = {b: (max(0.0, 0.9 - b / 800 + rng.normal(0, 0.03)), 0.97) for b in grid}
    search = search_budget(grid, [True] * len(grid), Target(0.45, 0.96), fitter(lambda b: noisy[b], []))
    lo, hi = search.bracket
    assert hi == search.budget and hi - lo == 10 and noisy[hi][0] <= 0.45 < noisy[lo][0]
    assert "bisection" in search.note and "(350, 360]" in search.note


def test_limit_skips_budgets_that_cannot_win_and_keeps_the_last_that_can():
    grid = list(range(0, 101))
    made = []
    search = search_budget(grid, [True] * 101, Target(0.5, 0.0), fitter(lambda b: (1 - b / 100, 1.0), made), limit=37)
    assert max(b for batch in made for b in batch) == 37 and search.budget is None
    search = search_budget(grid, [True] * 101, Target(0.5, 0.0), fitter(lambda b: (1 - b / 60, 1.0), []), limit=37)
    assert search.budget == 30


def test_retained_tolerance_is_part_of_acceptance():
    grid = list(range(0, 101))
    # forgetting comes early, but the retained accuracy drops below tolerance until budget 70
    metric = lambda b: (1 - b / 50, 0.90 if b < 70 else 0.99)   # noqa: E731
    search = search_budget(grid, [True] * 101, Target(0.5, 0.98), fitter(metric, []))
    assert search.budget == 70
