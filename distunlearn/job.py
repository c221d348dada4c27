"""The unlearn job: read, fit, score, select, write. Each step is one call into the Spark layer."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from pyspark.sql import SparkSession

from distunlearn.config import UnlearnConfig
from distunlearn.core.gaussian import PooledGaussian
from distunlearn.core.selection import BudgetChoice, EditedKL, Thresholds, alpha_max
from distunlearn.errors import InfeasibleError
from distunlearn.progress import phase
from distunlearn.spark.delta_writer import check_manifest, check_targets, write_edited, write_manifest
from distunlearn.spark.ordering import RuleOrdering, score_unwanted
from distunlearn.spark.source import Source, labelled_rows
from distunlearn.spark.statistics import domain_moments


@dataclass
class UnlearnPlan:
    """What the job will delete and what each evaluated rule would need."""

    run_id: str
    config: UnlearnConfig
    source: Source
    model: PooledGaussian
    kl: EditedKL
    thresholds: Thresholds
    choices: list[BudgetChoice]
    chosen: BudgetChoice
    ordering: RuleOrdering

    def infeasible_message(self) -> str:
        eps = self.thresholds.epsilon
        rules = ", ".join(c.rule for c in self.choices)
        return (f"no deletion set of {rules} reaches alpha = {self.thresholds.alpha:.6g} nats at "
                f"epsilon = {eps:.6g}: the best alpha reachable at that epsilon is {self.chosen.best_alpha:.6g} "
                f"({self.chosen.rule}); the frontier bound is {alpha_max(self.kl.kappa, eps):.6g}")


def plan_unlearning(spark: SparkSession, config: UnlearnConfig, run_id: str) -> UnlearnPlan:
    """Statistics, model, thresholds and every evaluated rule's smallest budget; writes nothing."""
    if not config.dry_run:
        check_targets(config.source, config.output, config.manifest_path, config.report)
    elif config.report:
        check_targets(config.source, None, None, config.report)
    source = Source.read(spark, config.source, config.format)
    labelled = labelled_rows(source, config.id_col, config.vector_col, config.unwanted, config.retained)
    if config.manifest_path and not config.dry_run:
        check_manifest(spark, config.manifest_path, labelled.schema["id"].dataType)

    with phase("statistics pass") as detail:
        unwanted, retained = domain_moments(labelled, config.id_col, config.vector_col)
        detail.update(unwanted=unwanted.n, retained=retained.n, dims=unwanted.dim)
    model = PooledGaussian.fit(unwanted, retained, config.ridge)
    kl = EditedKL.from_model(model)
    thresholds = Thresholds.resolve(kl, **config.thresholds)

    with phase("scoring pass") as detail:
        scored = score_unwanted(labelled, model, config.rules, config.seed)
        detail.update(rows=model.n1, rules=len(config.rules))
    choices, best = [], None
    for rule in config.rules:
        with phase(f"selection, {rule}") as detail:
            ordering = RuleOrdering(scored, rule, model.n1, model.dim, config.order_chunks)
            choice = ordering.choose(kl, thresholds)
            detail.update(chunks=ordering.chunks, deleted=choice.deleted if choice.feasible else "infeasible")
        choices.append(choice)
        if best is None or _better(choice, best[0]):
            best = (choice, ordering)
    return UnlearnPlan(run_id, config, source, model, kl, thresholds, choices, best[0], best[1])


def _better(a: BudgetChoice, b: BudgetChoice) -> bool:
    """Fewer deletions wins; between infeasible rules, the larger reachable alpha."""
    if a.feasible != b.feasible:
        return a.feasible
    return a.deleted < b.deleted if a.feasible else a.best_alpha > b.best_alpha


def run_unlearn(spark: SparkSession, config: UnlearnConfig) -> dict:
    """Plan, then (unless ``dry_run``) write the edited table and the manifest; returns the report."""
    from distunlearn.report import build_report

    run_id = config.run_id or str(uuid.uuid4())
    plan = plan_unlearning(spark, config, run_id)
    if not plan.chosen.feasible:
        raise InfeasibleError(plan.infeasible_message(), report=build_report(plan))
    versions = {}
    if not config.dry_run:
        deleted = plan.ordering.deleted(plan.chosen.deleted)
        with phase("writing edited table"):
            versions["output_version"] = write_edited(spark, plan.source.df, deleted, config.id_col,
                                                      config.output, run_id)
        with phase("writing manifest"):
            versions["manifest_version"] = write_manifest(spark, deleted, run_id, plan.chosen.rule,
                                                          config.manifest_path)
    report = build_report(plan, **versions)
    if config.report:
        with open(config.report, "w") as fh:
            json.dump(report, fh, indent=2)
    return report
