"""The unlearn job: read, fit, score, select, write. Each step is one call into the Spark layer."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from distunlearn.config import UnlearnConfig
from distunlearn.core.gaussian import PooledGaussian
from distunlearn.core.selection import BudgetChoice, EditedKL, Removed, Thresholds, alpha_max
from distunlearn.errors import ConflictError, InfeasibleError
from distunlearn.lineage import Lineage
from distunlearn.pipeline import Domains, fit, order, read_labelled, score
from distunlearn.progress import phase
from distunlearn.spark.delta_writer import (check_manifest, check_targets, committed_version, manifest_rows,
                                            merge_delete, read_version, replace_run_rows, undo_edit,
                                            warn_if_unsafe_s3_writes, write_edited)
from distunlearn.spark.checkpoints import check_checkpoint_dir
from distunlearn.spark.keys import KeySet, key_row_bytes
from distunlearn.spark.ledger import Ledger
from distunlearn.spark.ordering import RuleOrdering, choose_budgets
from distunlearn.spark.purge import purge
from distunlearn.spark.source import Source, read_requests
from distunlearn.spark.table import TableRef, first_line
from distunlearn.udfs.scoring import REQUESTED_TOTALS_SCHEMA, requested_totals

log = logging.getLogger("distunlearn")


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
    orderings: dict[str, RuleOrdering]   # the chosen rule's deletion order (every rule's with keep_orderings)
    requested: DataFrame      # (id) of every requested row, whatever its domain
    removed: Removed          # requested rows of the two domains: already out of the edited data
    n_requested: int
    id_bytes: int = 0         # the longest string id (sizes the deleted ids' broadcast)
    downstream: dict | None = None   # the downstream objective's search (fits, metrics, target)

    def infeasible_message(self) -> str:
        eps = self.thresholds.epsilon
        rules = ", ".join(c.rule for c in self.choices)
        if self.downstream is not None:
            target = self.downstream["target"]
            return (f"no budget of {rules} brings the retrained classifier's forget-domain accuracy to "
                    f"{target['forget_accuracy_at_most']:.4g} with retained accuracy >= "
                    f"{target['retained_accuracy_at_least']:.4g} at epsilon = {eps:.6g} "
                    f"({self.downstream['fits_made']} fits; see the report's downstream.rules)")
        return (f"no deletion set of {rules} reaches alpha = {self.thresholds.alpha:.6g} nats at "
                f"epsilon = {eps:.6g}: the best alpha reachable at that epsilon is {self.chosen.best_alpha:.6g} "
                f"({self.chosen.rule}); the frontier bound is {alpha_max(self.kl.kappa, eps):.6g}")

    @property
    def ordering(self) -> RuleOrdering:
        return self.orderings[self.chosen.rule]

    def manifest(self, hash_key: bytes | None) -> DataFrame:
        return manifest_rows(self.ordering.deleted(self.chosen.deleted), self.requested, self.run_id,
                             self.chosen.rule, hash_key, "downstream" if self.downstream else "distributional")

    def deleted_ids(self) -> DataFrame:
        return self.ordering.deleted(self.chosen.deleted).select("id").unionByName(self.requested)

    def deleted_keys(self) -> KeySet:
        """How many ids the edit deletes (the budget plus the requested rows) and their width, known
        before any join."""
        id_type = self.requested.schema["id"].dataType
        return KeySet(self.chosen.deleted + self.n_requested, key_row_bytes(id_type, self.id_bytes))

    def model_record(self) -> dict:
        """The fitted model, kept in the ledger so ``verify`` can recompute the KLs later."""
        m = self.model
        return {"mu1": m.mu1.tolist(), "mu2": m.mu2.tolist(), "sigma": m.sigma.ravel().tolist()}


def plan_unlearning(spark: SparkSession, config: UnlearnConfig, run_id: str,
                    keep_orderings: bool = False) -> UnlearnPlan:
    """Statistics, model, thresholds and every evaluated rule's smallest budget; writes nothing. The
    deletion order of a rule that loses is released at once unless ``keep_orderings`` (curves of every
    rule)."""
    domains = Domains.of(config)
    check_checkpoint_dir(spark, config.checkpoint_dir)
    if config.objective == "downstream":
        config.downstream_classifier.estimator()   # a bad classifier or param fails before any pass
    requests = read_requests(spark, config.requests, config.request_key or config.id_col, config.broadcast_limit_mb) \
        if config.requests is not None else None
    labelled = read_labelled(spark, config.source, config.format, domains, requests, config.request_key,
                             config.label_col if config.objective == "downstream" else None)
    fitted = fit(labelled.rows, domains, config.ridge, reliable=config.checkpoint_dir is not None,
                 covariance=config.covariance)
    model, kl = fitted.model, fitted.kl
    thresholds = Thresholds.resolve(kl, **config.thresholds)
    removed, n_requested = Removed.nothing(model.dim), 0
    if requests is not None:
        with phase("deletion requests") as detail:
            removed, n_requested = _requested_removal(labelled.rows, model)
            detail.update(rows=n_requested, in_domains=removed.count)

    scored = score(fitted, config.rules, config.seed, config.order_chunks)
    downstream = None
    if config.objective == "downstream":
        from distunlearn.downstream_objective import choose_downstream

        choices, orderings, chosen, downstream = choose_downstream(spark, labelled.rows, fitted, scored, config,
                                                                   thresholds, keep_orderings)
        if chosen.feasible:  # the removal KL the edit reaches, which verify checks the table still shows
            thresholds = Thresholds(chosen.removal, thresholds.epsilon)
    else:
        choices, orderings, chosen = _choose_kl(scored, fitted, thresholds, removed, config.rules, keep_orderings)
    requested = labelled.rows.where(F.col("requested")).select("id")
    return UnlearnPlan(run_id, config, labelled.source, model, kl, thresholds, choices, chosen, orderings,
                       requested, removed, n_requested, fitted.stats.id_bytes, downstream)


def _choose_kl(scored, fitted, thresholds: Thresholds, removed: Removed, rules: tuple[str, ...],
               keep_orderings: bool) -> tuple[list[BudgetChoice], dict[str, RuleOrdering], BudgetChoice]:
    """Every rule's smallest budget meeting the KL thresholds, the orderings kept, and the best choice.

    One chunk: every rule's order is sorted in the one task, so one scan takes all rules. More chunks:
    one rule at a time, and the deletion order of a rule that loses is released before the next is made."""
    if scored.chunks == 1:
        with phase(f"selection, {rules[0] if len(rules) == 1 else f'{len(rules)} rules in one scan'}") as detail:
            orderings = {rule: order(scored, rule, fitted) for rule in rules}
            choices = choose_budgets(list(orderings.values()), fitted.kl, thresholds, removed)
            detail.update(chunks=1, deleted=", ".join(f"{c.rule} {c.deleted if c.feasible else 'infeasible'}"
                                                      for c in choices))
        best = choices[0]
        for choice in choices[1:]:
            best = choice if _better(choice, best) else best
        return choices, orderings if keep_orderings else {best.rule: orderings[best.rule]}, best
    choices, orderings, best = [], {}, None
    for rule in rules:
        with phase(f"selection, {rule}") as detail:
            ordering = order(scored, rule, fitted)
            choice = ordering.choose(fitted.kl, thresholds, removed)
            detail.update(chunks=ordering.chunks, deleted=choice.deleted if choice.feasible else "infeasible")
        choices.append(choice)
        orderings[rule] = ordering
        if best is None or _better(choice, best):
            if best is not None and not keep_orderings:
                del orderings[best.rule]   # its checkpoint goes with the last reference
            best = choice
        elif not keep_orderings:
            del orderings[rule]
        del ordering
    return choices, orderings, best


def _requested_removal(labelled: DataFrame, model: PooledGaussian) -> tuple[Removed, int]:
    rows = labelled.where(F.col("requested")).select("domain", "vec") \
        .mapInArrow(requested_totals(model), REQUESTED_TOTALS_SCHEMA).collect()
    z = np.sum([np.asarray(r["z"]) for r in rows], axis=0) if rows else np.zeros(model.dim)
    return Removed(int(sum(r["n"] for r in rows)), z), int(sum(r["rows"] for r in rows))


def _better(a: BudgetChoice, b: BudgetChoice) -> bool:
    """Fewer deletions wins; between infeasible rules, the larger reachable alpha."""
    if a.feasible != b.feasible:
        return a.feasible
    return a.deleted < b.deleted if a.feasible else a.best_alpha > b.best_alpha


def run_unlearn(spark: SparkSession, config: UnlearnConfig, plan: UnlearnPlan | None = None) -> dict:
    """Plan (or take ``plan``), then (unless ``dry_run``) write the manifest and the edit, purge if asked;
    returns the report.

    Idempotent per run id: a run that already succeeded is reported again, not repeated; a run that
    died after its edit committed is finished (purge, ledger) without planning again.
    """
    run_id = config.run_id or (plan.run_id if plan else str(uuid.uuid4()))
    hash_key = config.hash_key() if config.hash_ids else None
    ledger_table = config.ledger_table
    ledger = Ledger(spark, ledger_table) if ledger_table and not config.dry_run else None
    earlier = ledger.get(run_id) if ledger else None
    if earlier and earlier["status"] == "succeeded":
        log.info("run %s already succeeded; nothing to do", run_id)
        if earlier["config_hash"] != config.fingerprint:
            log.warning("run %s succeeded earlier with other settings; use a new --run-id for a new run", run_id)
        return {**json.loads(earlier["report"]), "repeated": True}
    source_name = _name(config.source)
    lineage = Lineage(run_id)
    lineage.start(source_name)
    try:
        report = _edit(spark, config, run_id, ledger, hash_key, plan)
        if config.purge:
            with phase("purge (REORG, VACUUM)") as detail:
                report["purge"] = purge(spark, config.source_table, config.purge_retention_hours, run_id,
                                        report["source_version_written"], config.id_col)
                detail.update(retention_hours=config.purge_retention_hours)
        if ledger:
            ledger.record(run_id, "succeeded", report)
    except Exception as exc:
        if ledger and ledger.get(run_id) is not None:
            ledger.record(run_id, "failed", error=first_line(exc))
        lineage.fail(source_name, first_line(exc))
        raise
    lineage.complete(report)
    if config.report:
        with open(config.report, "w") as fh:
            json.dump(report, fh, indent=2)
    return report


def _name(data) -> str:
    return TableRef.parse(data).location if isinstance(data, str) else "<DataFrame>"


def _edit(spark: SparkSession, config: UnlearnConfig, run_id: str, ledger: Ledger | None,
          hash_key: bytes | None, planned: UnlearnPlan | None) -> dict:
    """Plan and commit the edit, re-planning when another writer commits to the source first."""
    from distunlearn.report import build_report

    source = config.source_table
    target = source if config.in_place else config.output_table
    for attempt in range(config.max_retries + 1):
        done = committed_version(spark, target, run_id, ("MERGE",) if config.in_place else _CREATE_OPS) \
            if target and not config.dry_run else None
        if done is not None and ledger and ledger.report(run_id):
            log.info("run %s: the edit committed as version %d earlier; finishing the run", run_id, done)
            return _with_version(ledger.report(run_id), config, done)
        check_targets(spark, source, None if config.in_place or config.dry_run else target,
                      None if config.dry_run else config.manifest_table, config.report,
                      None if config.dry_run else config.ledger_table)
        plan = dataclasses.replace(planned, config=config) if planned is not None and attempt == 0 \
            else plan_unlearning(spark, config, run_id)
        if not plan.chosen.feasible:
            raise InfeasibleError(plan.infeasible_message(), report=build_report(plan))
        if config.dry_run:
            return build_report(plan)
        warn_if_unsafe_s3_writes(spark, target, config.manifest_table, config.ledger_table)
        check_manifest(spark, config.manifest_table,
                       StringType() if config.hash_ids else plan.requested.schema["id"].dataType)
        report = build_report(plan)
        with phase("writing manifest"):
            replace_run_rows(config.manifest_table, plan.manifest(hash_key), run_id)
            report["manifest_version"] = config.manifest_table.latest_version(spark)
        if ledger:
            ledger.record(run_id, "planned", report, plan.model_record(), config.fingerprint)
        try:
            with phase("committing the edit") as detail:
                version = _commit(spark, config, plan, run_id)
                detail.update(version=version)
        except Exception as exc:  # noqa: BLE001 - conflicts re-plan, anything else is raised
            if not _is_conflict(exc):
                raise
            log.warning("attempt %d: %s changed while planning (%s); planning again", attempt + 1, source.text,
                        first_line(exc))
            continue
        return _with_version(report, config, version)
    raise ConflictError(f"{source.text} kept changing under the run: gave up after {config.max_retries + 1} "
                        f"attempts (run id {run_id}); rerun with --run-id {run_id}")


_CREATE_OPS = ("WRITE", "CREATE TABLE AS SELECT", "CREATE TABLE")


class SourceChanged(Exception):
    """The source has a newer version than the one planned on."""


def _conflict_types() -> tuple[type, ...]:
    from delta import exceptions as e

    return (SourceChanged, e.ConcurrentAppendException, e.ConcurrentDeleteReadException,
            e.ConcurrentDeleteDeleteException, e.ConcurrentTransactionException, e.MetadataChangedException,
            e.ProtocolChangedException, e.ConcurrentWriteException)


_CONFLICTS = _conflict_types()
_CONFLICT_CLASSES = ("DELTA_CONCURRENT", "DELTA_METADATA_CHANGED", "DELTA_PROTOCOL_CHANGED")


def _is_conflict(exc: BaseException) -> bool:
    """Delta's concurrent-modification errors, as classic PySpark (by type) and Connect (by error class) raise them."""
    if isinstance(exc, _CONFLICTS):
        return True
    error_class = getattr(exc, "getCondition", getattr(exc, "getErrorClass", lambda: None))() or ""
    return error_class.startswith(_CONFLICT_CLASSES) or any(c in str(exc)[:200] for c in _CONFLICT_CLASSES)


def _commit(spark: SparkSession, config: UnlearnConfig, plan: UnlearnPlan, run_id: str) -> int:
    """The edit as one Delta commit. In place, the MERGE must have read the planned version: Delta's own
    conflict check covers commits after the version the MERGE read; a commit that slipped in between the
    version check and the MERGE shows in the MERGE commit's ``readVersion``, and the edit is then undone
    (RESTORE) and planned again, or, when others committed after it too, the run stops with exit 3."""
    if not config.in_place:
        return write_edited(spark, plan.source.df, plan.deleted_ids(), plan.deleted_keys(), config.id_col,
                            config.output_table, run_id, config.broadcast_limit_mb)
    source, planned = config.source_table, plan.source.version
    current = source.latest_version(spark)
    if current != planned:
        raise SourceChanged(f"version {current} is newer than the planned version {planned}")
    version = merge_delete(spark, source, plan.deleted_ids(), plan.deleted_keys(), config.id_col, run_id,
                           config.broadcast_limit_mb)
    read = None if version is None else read_version(spark, source, version)
    if version is None or read == planned:
        return version
    restored = undo_edit(spark, source, version, run_id)
    if restored is None:
        raise ConflictError(f"{source.text}: the edit (version {version}) was made on version {read}, not on the "
                            f"planned version {planned}, and other commits followed it, so it was not undone; "
                            f"check it with: distunlearn verify --source {source.text} --run-id {run_id}")
    raise SourceChanged(f"the MERGE read version {read}, not the planned version {planned}: undone by version "
                        f"{restored}")


def _with_version(report: dict, config: UnlearnConfig, version: int) -> dict:
    key = "source_version_written" if config.in_place else "output_version"
    return {**report, key: version, "finished_at": dt.datetime.now(dt.timezone.utc).isoformat()}
