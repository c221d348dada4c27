"""The Python API: configure an ``Unlearner`` once, ``plan`` on a DataFrame or a table, look at the plan,
``apply`` it to a path or a table name.

    u = Unlearner(unwanted="topic = 'gossip'", alpha_rel=0.5, epsilon_rel=1.0)
    plan = u.plan(spark.table("lake.posts"))      # or u.plan("lake.posts"), u.plan("s3a://lake/posts")
    plan                                          # in a notebook: thresholds and every rule's budget
    plan.deletion_set()                           # DataFrame: run_id, id, reason, rule, score, rank
    plan.apply(output="lake.posts_edited")        # or u.plan("lake.posts").apply(in_place=True, purge=True)

The CLI and ``jobs/`` build the same objects from flags and config files. Nothing is set on the caller's
session: settings a Delta command needs travel with the write or run in a session of the run's own.
"""
from __future__ import annotations

import dataclasses
import html
import uuid

from pyspark.sql import DataFrame, SparkSession

from distunlearn.spark.keys import DEFAULT_BROADCAST_LIMIT_MB
from distunlearn.config import EvaluateConfig, UnlearnConfig, check_renamed
from distunlearn.core.curves import budget_grid
from distunlearn.errors import InfeasibleError
from distunlearn.job import UnlearnPlan, plan_unlearning, run_unlearn
from distunlearn.report import build_report, summary
from distunlearn.run_report import RuleEntry, RunReport

_WRITE_FIELDS = ("output", "in_place", "manifest", "ledger", "purge", "retention_hours", "only_writer", "hash_ids",
                 "report", "max_retries")


def _session(data, spark: SparkSession | None) -> SparkSession:
    if spark is not None:
        return spark
    if isinstance(data, DataFrame):
        return data.sparkSession
    from distunlearn.spark.session import get_session

    return get_session()


class Unlearner:
    """The domains to forget and keep, the thresholds and the rule; parameters are checked once, here.

    ``unwanted`` and ``retained`` are SQL predicates over the source (``retained`` defaults to NOT
    unwanted). Thresholds: ``alpha``/``alpha_rel`` (removal, default ``alpha_rel=0.5``) and
    ``epsilon``/``epsilon_rel`` (preservation, default ``epsilon_rel=1.0``); see docs/how-it-works.md.
    ``requests`` (a table or a DataFrame of keys) deletes those rows whatever their domain. Deleted ids
    and request keys are broadcast to their joins when they take at most ``broadcast_limit_mb`` MiB.
    ``checkpoint_dir``: reliable checkpoints there (the session's ``spark.checkpoint.dir``) instead of local ones.
    ``objective="downstream"`` with ``label_col``: the fewest deletions at which ``classifier`` (a ``pyspark.ml``
    class name, ``classifier_params``) retrained on the edited rows moves its forget-domain accuracy
    ``downstream_target`` of the way to the full-removal model's, losing at most ``retained_tolerance`` of
    retained-domain accuracy, with KL(p2||p_f) <= epsilon (docs/how-it-works.md).
    """

    def __init__(self, unwanted: str, retained: str | None = None, *, id_col: str = "id",
                 vector_col: str = "embedding", alpha: float | None = None, epsilon: float | None = None,
                 alpha_rel: float | None = None, epsilon_rel: float | None = None, rule: str = "auto",
                 seed: int = 0, ridge: float = 1e-6, covariance: str = "ridge", order_chunks: int | None = None,
                 requests=None,
                 request_key: str | None = None, format: str = "delta",
                 broadcast_limit_mb: float = DEFAULT_BROADCAST_LIMIT_MB, checkpoint_dir: str | None = None,
                 objective: str = "kl", label_col: str | None = None, downstream_target: float = 0.5,
                 retained_tolerance: float = 0.01, classifier: str = "LogisticRegression",
                 classifier_params: dict | None = None):
        self.config = UnlearnConfig(source="<unset>", unwanted=unwanted, retained=retained, id_col=id_col,
                                    vector_col=vector_col, alpha=alpha, epsilon=epsilon, alpha_rel=alpha_rel,
                                    epsilon_rel=epsilon_rel, rule=rule, seed=seed, ridge=ridge, covariance=covariance,
                                    order_chunks=order_chunks, requests=requests, request_key=request_key,
                                    format=format, broadcast_limit_mb=broadcast_limit_mb,
                                    checkpoint_dir=checkpoint_dir, objective=objective, label_col=label_col,
                                    downstream_target=downstream_target, retained_tolerance=retained_tolerance,
                                    classifier=classifier, classifier_params=classifier_params or {},
                                    dry_run=True)

    @classmethod
    def from_config(cls, config: UnlearnConfig) -> "Unlearner":
        self = cls.__new__(cls)
        self.config = dataclasses.replace(config, **{f: _default(f) for f in _WRITE_FIELDS}, dry_run=True,
                                          run_id=None, source="<unset>")
        return self

    def __repr__(self) -> str:
        c = self.config
        return (f"Unlearner(unwanted={c.unwanted!r}, retained={c.retained!r}, rule={c.rule!r}, "
                f"thresholds={c.thresholds})")

    def plan(self, data: "DataFrame | str", spark: SparkSession | None = None, run_id: str | None = None) -> "Plan":
        """Statistics, model and every rule's smallest budget on ``data`` (a DataFrame, or a table's path,
        URI or catalog name, read at its latest version); writes nothing."""
        spark = _session(data, spark)
        config = dataclasses.replace(self.config, source=data)
        run_id = run_id or str(uuid.uuid4())
        return Plan(spark, plan_unlearning(spark, config, run_id, keep_orderings=True))

    def evaluate(self, data: "DataFrame | str", spark: SparkSession | None = None, **options) -> dict:
        """Every rule's budget curves, halving budget and the frontier (``EvaluateConfig`` options such as
        ``rule``, ``budget_steps``, ``report``, ``objective``, ``label_col``); writes only the report files."""
        from distunlearn.evaluate import evaluate

        check_renamed(options)
        c = self.config
        config = EvaluateConfig(source=data, unwanted=c.unwanted, retained=c.retained, id_col=c.id_col,
                                vector_col=c.vector_col, seed=c.seed, ridge=c.ridge, covariance=c.covariance,
                                order_chunks=c.order_chunks,
                                checkpoint_dir=c.checkpoint_dir, format=c.format,
                                **{"label_col": c.label_col, "classifier": c.classifier,
                                   "classifier_params": c.classifier_params, **options})
        return evaluate(_session(data, spark), config)


def _default(name: str):
    return next(f.default for f in dataclasses.fields(UnlearnConfig) if f.name == name)


class Plan:
    """What a run would delete: ``report`` (every figure), ``budgets`` (each rule's), ``deletion_set()``,
    ``curves()``; ``apply`` writes it. Holds checkpoints on the executors, never rows on the driver."""

    def __init__(self, spark: SparkSession, planned: UnlearnPlan):
        self.spark = spark
        self._planned = planned
        self.report = build_report(planned)

    @property
    def run_id(self) -> str:
        return self._planned.run_id

    @property
    def rule(self) -> str:
        return self.report.rule

    @property
    def deleted(self) -> int:
        return self.report.deleted

    @property
    def feasible(self) -> bool:
        return self.report.feasible

    @property
    def budgets(self) -> dict[str, RuleEntry]:
        """For each evaluated rule: feasible, deleted, deleted_fraction, KLs after (or the best alpha)."""
        return self.report.rules

    def deletion_set(self) -> DataFrame:
        """The rows the plan deletes (``run_id, id, reason, rule, score, rank``), as a DataFrame."""
        if not self.feasible:
            raise InfeasibleError(self._planned.infeasible_message())
        return self._planned.manifest(None)

    def curves(self, budget_steps: int = 100) -> dict[str, dict]:
        """For each evaluated rule (``random`` as its seeded order), KL(p1||p_f) and KL(p2||p_f) at the
        ``budget_steps`` + 1 budgets 0, 1/N, ..., 1 of the unwanted rows, exact prefix sums."""
        kl = self._planned.kl
        grid = budget_grid(kl.n1, budget_steps)
        out = {}
        for rule, ordering in self._planned.orderings.items():
            curve = ordering.curve(kl, grid)
            out[rule] = {"f": curve.f.tolist(), "fraction": (curve.f / max(kl.n1, 1)).tolist(),
                         "kl_removal": curve.removal.tolist(), "kl_preservation": curve.preservation.tolist()}
        return out

    def apply(self, output: str | None = None, *, in_place: bool = False, manifest: str | None = None,
              ledger: str | None = None, purge: bool = False, retention_hours: float | None = None,
              only_writer: bool = False, hash_ids: bool = False, report: str | None = None,
              max_retries: int = 5) -> RunReport:
        """Write the plan: a new edited table at ``output`` (path, URI or catalog name), or the source
        edited ``in_place`` (a Delta table); the manifest, the ledger and (``purge``) physical erasure as
        the console command does. Returns the run's report."""
        config = dataclasses.replace(self._planned.config, output=output, in_place=in_place, manifest=manifest,
                                     ledger=ledger, purge=purge, retention_hours=retention_hours,
                                     only_writer=only_writer, hash_ids=hash_ids, report=report,
                                     max_retries=max_retries, dry_run=False,
                                     run_id=self.run_id)
        return run_unlearn(self.spark, config, plan=self._planned)

    def __repr__(self) -> str:
        return summary(self.report)

    def _repr_html_(self) -> str:
        r = self.report
        rows = []
        for rule, e in r.rules.items():
            chosen = rule == r.rule and r.feasible
            cells = [("&#10003; " if chosen else "") + html.escape(rule)]
            if e.feasible:
                cells += [f"{e.deleted:,}", f"{100 * e.deleted_fraction:.1f}%",
                          f"{e.kl_removal_after:.4g}", f"{e.kl_preservation_after:.4g}"]
            else:
                cells += ["infeasible", "", f"best {e.best_alpha_at_epsilon or 0:.4g}", ""]
            style = ' style="font-weight:bold"' if chosen else ""
            rows.append(f"<tr{style}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        head = "".join(f"<th>{h}</th>" for h in ("rule", "deleted", "% unwanted", "KL(p1||p_f)", "KL(p2||p_f)"))
        verdict = (f"deletes <b>{r.deleted:,}</b> of {r.n_unwanted:,} unwanted rows by <b>{r.rule}</b>"
                   if r.feasible else "<b>infeasible</b>: no rule meets both thresholds")
        return (f"<div><p><b>distunlearn plan</b> {html.escape(str(r.source))} (version {r.source_version}): "
                f"{verdict}; {r.deleted_requested:,} requested rows.</p>"
                f"<p>{r.n_unwanted:,} unwanted, {r.n_retained:,} retained rows, {r.dims} dims; "
                f"KL(p1||p_f) &ge; alpha = {r.alpha:.4g} (now {r.kl_removal_before:.4g}), "
                f"KL(p2||p_f) &le; epsilon = {r.epsilon:.4g} (now {r.kl_preservation_before:.4g}); "
                f"kappa = {r.kappa:.4g}.</p>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")

