"""``unlearn --objective downstream``: each rule's smallest budget at which a classifier retrained on the
edited rows forgets the domain, searched by ``core.budget_search``; the rule with the fewest deletions wins.

The deletion order, the KLs and the edit cover the whole table, as with the KL objective. The classifier
learns from the rows outside a held-out split (by id hash) and is scored on that split, so a budget's
training set is the training rows minus the first ``budget`` rows of the order. The all-data and
full-removal models do not depend on the order: they are fitted once and shared by every rule. When the
full-removal model does not lower the forget metric by more than its noise (``forget_noise``), no budget
can forget the domain: the search stops there, infeasible.
"""
from __future__ import annotations

import math
import time

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from distunlearn.core.budget_search import (COARSE_INTERVALS, FITS_PER_ROUND, Fit, Search, Target, forget_noise,
                                            search_budget)
from distunlearn.core.curves import budget_grid
from distunlearn.core.selection import BudgetChoice, Thresholds
from distunlearn.errors import InfeasibleError
from distunlearn.pipeline import Fitted, Scored
from distunlearn.progress import phase
from distunlearn.spark.downstream import Downstream, fit_partitions
from distunlearn.spark.ordering import RuleOrdering
from distunlearn.spark.retrain_order import rule_order

def choose_downstream(spark: SparkSession, rows: DataFrame, fitted: Fitted, scored: Scored, config,
                      thresholds: Thresholds, keep_orderings: bool = False
                      ) -> tuple[list[BudgetChoice], dict[str, RuleOrdering], BudgetChoice, dict]:
    """(every rule's choice, the orderings kept, the best choice, the record of the search for the report)."""
    started = time.perf_counter()
    model, kl = fitted.model, fitted.kl
    n1 = model.n1
    with phase("downstream: caching the training split") as detail:
        downstream = Downstream(rows, config.test_fraction, config.seed, config.downstream_classifier,
                                fit_partitions(model.n1 + model.n2, model.dim))
        detail.update(test_rows=downstream.test_rows["unwanted"] + downstream.test_rows["retained"],
                      partitions=downstream.partitions)
    grid = [int(b) for b in budget_grid(n1, config.budget_steps)]
    choices, orderings, searches, costs, best = [], {}, {}, {}, None
    try:
        anchors = _anchors(downstream, scored, n1)
        target = Target.between(anchors[0], anchors[n1], config.downstream_target, config.retained_tolerance)
        for rule in config.rules:
            with phase(f"downstream search, {rule}") as detail:
                ordering, costs[rule] = rule_order(scored, rule, fitted, downstream, config.rounds)
                if best is not None and best.deleted == 0:
                    search, kls = Search(note="another rule deletes nothing"), {}
                else:
                    curve = ordering.curve(kl, np.asarray(grid))
                    kls = {f: (r, p) for f, r, p in zip(curve.f.tolist(), curve.removal, curve.preservation)}
                    allowed = [bool(thresholds.preservation_met(kls[b][1])) for b in grid]
                    ranked = downstream.with_ranks(ordering.deleted(n1))
                    try:
                        search = search_budget(grid, allowed, target, lambda budgets: downstream.fit(ranked, budgets),
                                               known=anchors, limit=None if best is None else best.deleted - 1)
                    finally:
                        ranked.unpersist()
                removal, preservation = kls.get(search.budget, (math.nan, math.nan))
                choice = BudgetChoice(rule, search.budget, float(removal), float(preservation), math.nan)
                detail.update(fits=len(search.fits), deleted=choice.deleted if choice.feasible else "none")
            choices.append(choice)
            searches[rule] = search
            orderings[rule] = ordering
            if choice.feasible and (best is None or choice.deleted < best.deleted):
                if best is not None and not keep_orderings:
                    del orderings[best.rule]
                best = choice
            elif not keep_orderings:
                del orderings[rule]
    finally:
        downstream.release()
    chosen = best or BudgetChoice(config.rules[0], None, math.nan, math.nan, math.nan)
    return choices, orderings, chosen, _record(config, downstream, anchors, target, searches, costs, n1,
                                               time.perf_counter() - started)


def _anchors(downstream: Downstream, scored: Scored, n1: int) -> dict[int, Fit]:
    """The all-data (budget 0) and full-removal (``n1``) models, which every order shares; infeasible when even
    deleting every unwanted row does not lower the forget metric by more than its noise."""
    with phase("downstream: all-data and full-removal models") as detail:
        ranked = downstream.with_ranks(scored.keyed.select("id", F.lit(1).alias("rank")))
        try:
            anchors = {f.budget: f for f in downstream.fit(ranked, sorted({0, n1}))}
        finally:
            ranked.unpersist()
        detail.update(forget_accuracy=f"{anchors[0].forget:.3f} -> {anchors[n1].forget:.3f}")
    _check_forgettable(anchors[0], anchors[n1], downstream.test_rows["unwanted"])
    return anchors


def _check_forgettable(all_data: Fit, full_removal: Fit, test_rows: int) -> None:
    noise = forget_noise(test_rows)
    if all_data.forget - full_removal.forget <= noise:
        raise InfeasibleError(
            f"the domain cannot be forgotten by deleting its rows: the forget-domain accuracy is "
            f"{all_data.forget:.4f} with all data and {full_removal.forget:.4f} with every unwanted row deleted, "
            f"a drop of {all_data.forget - full_removal.forget:.4f}, not more than the noise {noise:.4f} "
            f"(1/sqrt of its {test_rows} test rows); nothing written")


def _record(config, downstream: Downstream, anchors: dict[int, Fit], target: Target, searches: dict[str, Search],
            costs: dict[str, dict], n1: int, seconds: float) -> dict:
    """The search as the report, the ledger and ``verify`` keep it."""
    fits = sum(len(s.fits) for s in searches.values()) + len(anchors)
    fit_seconds = [f.seconds for f in anchors.values()] + [f.seconds for s in searches.values() for f in s.fits]
    return {
        **downstream.describe(config.label_col, config.test_fraction),
        "all_data": _fit_json(anchors[0], n1),
        "full_removal": _fit_json(anchors[n1], n1),
        "target": {"relative": config.downstream_target, "forget_accuracy_at_most": target.forget_max,
                   "retained_tolerance": config.retained_tolerance, "retained_accuracy_at_least": target.retained_min,
                   "forget_noise": forget_noise(downstream.test_rows["unwanted"]),
                   "noise_rule": "the full-removal model must lower the forget-domain accuracy by more than "
                                 "1/sqrt(its test rows), two binomial standard errors at accuracy 0.5 (the largest)"},
        "budget_steps": config.budget_steps,
        "search": f"a coarse grid of {COARSE_INTERVALS + 1} budgets (those above the best budget found so far are "
                  f"skipped), then bisection, {FITS_PER_ROUND} fits a round, inside the bracket of the first budget "
                  "that forgets enough (then of the first that also keeps the retained accuracy); the metric is "
                  "noisy, so the budget is the smallest acceptable one found, not a proven minimum",
        "rules": {rule: {"budget": s.budget, "fits": [_fit_json(f, n1) for f in s.fits], "coarse_grid": s.coarse,
                         "bracket": list(s.bracket) if s.bracket else None, "note": s.note, "order": costs[rule]}
                  for rule, s in searches.items()},
        "fits_made": fits,
        "fit_seconds_mean": float(np.mean(fit_seconds)) if fit_seconds else None,
        "seconds": seconds,
        "seconds_per_fit": seconds / fits if fits else None,
    }


def _fit_json(fit: Fit, n1: int) -> dict:
    return {"budget": fit.budget, "fraction": fit.budget / n1 if n1 else 0.0, "forget_accuracy": fit.forget,
            "retained_accuracy": fit.retained, "seconds": fit.seconds}
