"""The evaluate job: every rule's budget curves, halving budget and the Pareto frontier; optionally
a downstream classifier retrained at a grid of budgets. Reads the source, writes only the report."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os

import numpy as np
from pyspark.sql import SparkSession

from distunlearn.config import EvaluateConfig
from distunlearn.core.curves import (Curve, RandomExpectation, budget_grid, empirical_frontier, halfway_fraction,
                                     halving_thresholds)
from distunlearn.core.selection import Removed, alpha_max
from distunlearn.core.rules import DOWNSTREAM_RULES
from distunlearn.errors import ParameterError
from distunlearn.pipeline import Domains, fit, read_labelled, score
from distunlearn.progress import phase
from distunlearn.spark.checkpoints import check_checkpoint_dir
from distunlearn.spark.ordering import RuleOrdering
from distunlearn.spark.retrain_order import rule_order

log = logging.getLogger("distunlearn")

RANDOM_METHOD = "exact expectation over uniformly random deletion sets of each size (closed form, no sampling)"
ORDERED_METHOD = "the rule's deletion order, exact prefix sums at every sampled budget"
DOWNSTREAM_RANDOM_METHOD = "one seeded draw: rows deleted in the order of a hash of (seed, id)"


def evaluate(spark: SparkSession, config: EvaluateConfig) -> dict:
    """The evaluation report (docs/evaluate.md); writes the report files if asked."""
    if config.report and os.path.isdir(config.report):
        raise ParameterError(f"{{report}} {config.report} is a directory; give a file path such as out/eval.json",
                             "report")
    domains = Domains.of(config)
    check_checkpoint_dir(spark, config.checkpoint_dir)
    if config.downstream:
        config.downstream_classifier.estimator()   # a bad classifier or param fails before any pass
    labelled = read_labelled(spark, config.source, config.format, domains,
                             label_col=config.label_col if config.downstream else None)
    source, rows = labelled.source, labelled.rows
    labelled_rows = rows
    if config.downstream:   # the curves and the deletion orders come from the training split alone
        from distunlearn.spark.downstream import split_by_id

        rows = split_by_id(rows, config.test_fraction, config.seed)[0]

    fitted = fit(rows, domains, config.ridge, reliable=config.checkpoint_dir is not None,
                 covariance=config.covariance)
    stats, model, kl = fitted.stats, fitted.model, fitted.kl
    downstream = None
    if config.downstream:
        from distunlearn.spark.downstream import Downstream, fit_partitions

        with phase("downstream: caching the training split") as detail:
            downstream = Downstream(labelled_rows, config.test_fraction, config.seed, config.downstream_classifier,
                                    fit_partitions(model.n1 + model.n2, model.dim))
            detail.update(partitions=downstream.partitions)
    grid = budget_grid(model.n1, config.budget_steps)
    halving = halving_thresholds(kl)
    ordered = tuple(r for r in config.rules if r != "random" or downstream is not None)
    scored = score(fitted, tuple(r for r in ordered if r not in DOWNSTREAM_RULES), config.seed, config.order_chunks)

    rules: dict[str, dict] = {}
    curves: dict[str, Curve] = {}
    runs: dict[str, list] = {}
    costs: dict[str, dict] = {}
    for rule in config.rules:
        with phase(f"curve, {rule}") as detail:
            ordering = None
            if rule in ordered:
                ordering, costs[rule] = rule_order(scored, rule, fitted, downstream, config.rounds)
            if rule == "random":
                expectation = RandomExpectation.from_scatter(kl, model.whitener, stats.unwanted.m2)
                curve, budget, method = expectation.curve(grid), expectation.first_reaching(halving.alpha), \
                    RANDOM_METHOD
            else:
                curve, budget, method = ordering.curve(kl, grid), \
                    ordering.choose(kl, halving, Removed.nothing(model.dim)).deleted, ORDERED_METHOD
            curves[rule] = curve
            rules[rule] = {"halving_budget": budget, "halving_fraction": budget / model.n1, "curve_method": method,
                           "curve": _curve_json(curve, model.n1)}
            detail.update(halving_fraction=f"{budget / model.n1:.3f}")
        if downstream is not None:
            with phase(f"downstream retraining, {rule}") as detail:
                runs[rule] = _downstream_runs(downstream, ordering, model.n1, config.downstream_grid, runs)
                detail.update(models=len(config.downstream_grid))
    report = _report(config, source, model, kl, halving.alpha, rules, curves)
    if downstream is not None:
        report["downstream"] = _downstream_report(config, downstream, runs, costs, model.n1)
        downstream.release()
    if config.report:
        report["report_path"] = config.report
        write_report(report, config.report)
    return report


def _downstream_runs(downstream, ordering: RuleOrdering, n1: int, fractions, earlier: dict) -> list[dict]:
    """Metrics at each budget of the grid; all data (0) and full removal (1) are shared by every rule."""
    shared = {r["budget"]: r for r in next(iter(earlier.values()), []) if r["budget"] in (0, n1)}
    budgets = [int(round(fraction * n1)) for fraction in fractions]
    ranked = downstream.with_ranks(ordering.deleted(n1))
    try:
        fits = {f.budget: f for f in downstream.fit(ranked, sorted(set(budgets) - set(shared)))}
    finally:
        ranked.unpersist()
    return [shared.get(b) or {"fraction": f, "budget": b, "forget_accuracy": fits[b].forget,
                              "retained_accuracy": fits[b].retained, "seconds": fits[b].seconds}
            for f, b in zip(fractions, budgets)]


def _downstream_report(config: EvaluateConfig, downstream, runs: dict[str, list], costs: dict[str, dict],
                       n1: int) -> dict:
    fractions = [r["budget"] / n1 for r in next(iter(runs.values()))]
    entry = {}
    for rule, points in runs.items():
        forget = [p["forget_accuracy"] for p in points]
        grid_ok = fractions[0] == 0 and fractions[-1] == 1
        entry[rule] = {
            "points": points,
            "halving_fraction": halfway_fraction(fractions, forget) if grid_ok and None not in forget else None,
            "retained_accuracy_range": [min(p["retained_accuracy"] for p in points),
                                        max(p["retained_accuracy"] for p in points)],
            "order": costs[rule],
        }
    return {
        **downstream.describe(config.label_col, config.test_fraction),
        "halving": "fraction of the unwanted training rows deleted when the forget-domain accuracy first moves "
                   "halfway from the all-data model to the full-removal model, interpolated linearly on the grid",
        "random": DOWNSTREAM_RANDOM_METHOD,
        "rules": entry,
    }


def _curve_json(curve: Curve, n1: int) -> dict:
    return {"f": curve.f.tolist(), "fraction": (curve.f / n1).tolist(), "kl_removal": curve.removal.tolist(),
            "kl_preservation": curve.preservation.tolist()}


def _report(config, source, model, kl, halving_alpha, rules, curves) -> dict:
    removal0, preservation0 = kl.before
    eps, frontier = empirical_frontier(curves.values())
    eps_grid = np.linspace(0.0, max(preservation0, float(eps.max()) if len(eps) else 0.0), 50)
    return {
        "source": source.name,
        "source_version": source.version,
        "domains": {"id_col": config.id_col, "vector_col": config.vector_col, "unwanted": config.unwanted,
                    "retained": config.retained},
        "n_unwanted": kl.n1,
        "n_retained": kl.n2,
        "dims": model.dim,
        "ridge": config.ridge,
        "covariance": config.covariance,
        "shrinkage": model.shrinkage,
        "seed": config.seed,
        "kappa": kl.kappa,
        "kl_removal_before": removal0,
        "kl_preservation_before": preservation0,
        "halving_alpha": halving_alpha,
        "random": RANDOM_METHOD if "random" in rules else None,
        "rules": rules,
        "full_removal": {"halving_fraction": 1.0, "deleted": kl.n1, "kl_removal": kl.kappa, "kl_preservation": 0.0},
        "frontier": {
            "empirical": {"kl_preservation": eps.tolist(), "kl_removal": frontier.tolist()},
            "closed_form": {"epsilon": eps_grid.tolist(),
                            "alpha_max": [alpha_max(kl.kappa, e) for e in eps_grid]},
        },
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }


def write_report(report: dict, path: str) -> None:
    """The JSON report, and next to it the plots (``<stem>_curves.png``, ``<stem>_frontier.png``,
    ``<stem>_downstream.png``) and a markdown summary (``<stem>.md``)."""
    from distunlearn.plots import write_markdown, write_plots

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(report, fh, indent=1)
    write_plots(report, path)
    write_markdown(report, path)


def summary(report: dict) -> str:
    """A few lines for stdout: the setup and each rule's halving fraction."""
    lines = [f"distunlearn evaluate {report['source']}",
             f"  {report['n_unwanted']:,} unwanted rows, {report['n_retained']:,} retained rows, {report['dims']} dims; "
             f"kappa = {report['kappa']:.4g}; halving target KL(p1||p_f) >= {report['halving_alpha']:.4g}",
             f"  {'rule':<25}{'halving fraction':>17}{'downstream':>12}"]
    down = (report.get("downstream") or {}).get("rules", {})
    for rule, entry in report["rules"].items():
        d = down.get(rule, {}).get("halving_fraction")
        lines.append(f"  {rule:<25}{entry['halving_fraction']:>17.3f}{'' if d is None else format(d, '.3f'):>12}")
    lines.append(f"  {'full removal':<25}{1.0:>17.3f}")
    if report.get("report_path"):
        lines.append(f"  report {report['report_path']} (plots and summary beside it)")
    return "\n".join(lines)
