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
from distunlearn.errors import InfeasibleError
from distunlearn.lineage import Lineage
from distunlearn.domains import Domains
from distunlearn.pipeline import fit, order, read_labelled, score
from distunlearn.progress import phase
from distunlearn.run_report import RunCommit, RunReport
from distunlearn.spark.delta_writer import (CREATE_OPERATIONS, check_manifest, check_targets, committed_version,
                                            manifest_rows, replace_run_rows, warn_if_unsafe_s3_writes, write_edited)
from distunlearn.spark.live_edit import (LiveEdit, commit, committed_manifest, removed_files,
                                         run_commits, withdraw_manifest)
from distunlearn.spark.checkpoints import check_checkpoint_dir
from distunlearn.spark.keys import KeySet, key_row_bytes
from distunlearn.spark.ledger import Ledger
from distunlearn.spark.ordering import RuleOrdering, choose_budgets
from distunlearn.spark.purge import check_retention, purge
from distunlearn.spark.source import Requests, Source, read_requests
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
    requests: Requests | None = None  # the request keys the run matched

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
    labelled = read_labelled(spark, config.source, config.format, domains, requests and requests.keys,
                             config.request_key,
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
                       requested, removed, n_requested, fitted.stats.id_bytes, downstream, requests)


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


def run_unlearn(spark: SparkSession, config: UnlearnConfig, plan: UnlearnPlan | None = None) -> RunReport:
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
            log.warning("run %s succeeded earlier with other settings; use a new run id for a new run", run_id)
        return dataclasses.replace(ledger.run_report(run_id), repeated=True)
    source_name = _name(config.source)
    lineage = Lineage(run_id)
    lineage.start(source_name)
    try:
        report = _edit(spark, config, run_id, ledger, hash_key, plan)
        if config.purge:
            with phase("purge (REORG, VACUUM)") as detail:
                purged = purge(spark, config.source_table, config.purge_retention_hours, run_id,
                               report.source_version_written, config.id_col, config.only_writer)
                detail.update(retention_hours=config.purge_retention_hours)
            files = report.removed_files
            if purged.reorg_version is not None:   # the files it rewrote held the rows the MERGE only marked deleted
                files = sorted(set(files) | set(removed_files(spark, config.source_table, [purged.reorg_version])))
            report = dataclasses.replace(report, purge=purged, removed_files=files)
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
            json.dump(report.to_dict(), fh, indent=2)
    return report


def _name(data) -> str:
    return TableRef.parse(data).location if isinstance(data, str) else "<DataFrame>"


def _edit(spark: SparkSession, config: UnlearnConfig, run_id: str, ledger: Ledger | None,
          hash_key: bytes | None, planned: UnlearnPlan | None) -> RunReport:
    """Plan (or take ``planned``) and commit the edit: in place on the live source, or as a new table."""
    from distunlearn.report import build_report

    if config.in_place:
        return _edit_in_place(spark, config, run_id, ledger, hash_key, planned)
    output = None if config.dry_run else config.output_table
    done = committed_version(spark, output, run_id, CREATE_OPERATIONS) if output else None
    if done is not None and ledger and ledger.run_report(run_id):
        log.info("run %s: the edited table was written as version %d earlier; finishing the run", run_id, done)
        return _with_version(ledger.run_report(run_id), done)
    plan = _checked_plan(spark, config, run_id, planned)
    if config.dry_run:
        return build_report(plan)
    report = _stage(spark, config, plan, ledger, hash_key)
    try:
        with phase("writing the edited table") as detail:
            version = write_edited(spark, plan.source.df, plan.deleted_ids(), plan.deleted_keys(), config.id_col,
                                   output, run_id, config.broadcast_limit_mb)
            detail.update(version=version)
    except BaseException:
        if committed_version(spark, output, run_id, CREATE_OPERATIONS) is None:
            withdraw_manifest(spark, config.manifest_table, run_id)
        raise
    return _with_version(report, version)


def _checked_plan(spark: SparkSession, config: UnlearnConfig, run_id: str, planned: UnlearnPlan | None) -> UnlearnPlan:
    """The targets checked before any work, then the plan (``planned``, or made now); infeasible stops here."""
    from distunlearn.report import build_report

    check_targets(spark, config.source_table, None if config.in_place or config.dry_run else config.output_table,
                  None if config.dry_run else config.manifest_table, config.report,
                  None if config.dry_run else config.ledger_table)
    if config.purge and not config.dry_run:   # a retention below the table's stops the run before any edit
        check_retention(config.source_table.require_delta(spark, "{source}").get("properties") or {},
                        config.purge_retention_hours, config.only_writer, config.source_table)
    plan = dataclasses.replace(planned, config=config) if planned is not None else plan_unlearning(spark, config, run_id)
    if not plan.chosen.feasible:
        raise InfeasibleError(plan.infeasible_message(), report=build_report(plan))
    return plan


def _stage(spark: SparkSession, config: UnlearnConfig, plan: UnlearnPlan, ledger: Ledger | None,
           hash_key: bytes | None) -> RunReport:
    """The planned deletions staged in the manifest and the plan in the ledger, before any edit."""
    from distunlearn.report import build_report

    targets = (config.source_table,) if config.in_place else (config.output_table,)
    warn_if_unsafe_s3_writes(spark, *targets, config.manifest_table, config.ledger_table)
    check_manifest(spark, config.manifest_table,
                   StringType() if config.hash_ids else plan.requested.schema["id"].dataType)
    with phase("writing manifest"):
        replace_run_rows(config.manifest_table, plan.manifest(hash_key), plan.run_id)
        report = dataclasses.replace(build_report(plan), manifest_version=config.manifest_table.latest_version(spark))
    if ledger:
        ledger.record(plan.run_id, "planned", report, plan.model_record(), config.fingerprint)
    return report


def _edit_in_place(spark: SparkSession, config: UnlearnConfig, run_id: str, ledger: Ledger | None,
                   hash_key: bytes | None, planned: UnlearnPlan | None) -> RunReport:
    """Commit the edit on the source as it is now (``live_edit``), then list what committed in the
    manifest. A rerun of a run that died finds its commits in the table's history and finishes from there."""
    source, manifest = config.source_table, config.manifest_table
    edit = LiveEdit(source, run_id, config.id_col, None if config.requests is None else config.request_key or config.id_col,
                    config.max_retries, config.broadcast_limit_mb)
    earlier = ledger.run_report(run_id) if ledger else None
    commits = run_commits(spark, edit, earlier.source_version) if earlier else []
    if commits and earlier.commits is not None:
        log.info("run %s: the edit committed as version %d earlier; finishing the run", run_id, commits[0].version)
        return earlier
    if commits:
        log.info("run %s: the edit committed as version %d earlier; listing what it deleted", run_id, commits[0].version)
        requests = None if config.requests is None else read_requests(
            spark, config.requests, edit.request_key, config.broadcast_limit_mb, earlier.requests_read.version)
        plan, report = None, earlier
    else:
        plan = _checked_plan(spark, config, run_id, planned)
        requests = plan.requests
        report = _stage(spark, config, plan, ledger, hash_key)
    since = report.source_version
    try:
        with phase("committing the edit") as detail:
            commits = commit(spark, edit, plan.deleted_ids() if plan else None, plan.deleted_keys() if plan else None,
                             requests and requests.keys, requests and requests.size, since, commits)
            detail.update(versions=", ".join(str(c.version) for c in commits))
    except BaseException:
        try:   # the manifest then lists what committed: nothing, or the commits made before the failure
            commits = run_commits(spark, edit, since)
            if not commits:
                withdraw_manifest(spark, manifest, run_id)
            else:
                committed_manifest(spark, edit, commits, manifest, requests and requests.keys, hash_key, since)
        except Exception as cleanup:  # noqa: BLE001 - the first failure is the one to report; a rerun fixes this
            log.warning("run %s: the manifest could not be brought in line after the failure (%s); rerun with "
                        "--run-id %s", run_id, first_line(cleanup), run_id)
        raise
    with phase("manifest of the committed deletions") as detail:
        rewritten = committed_manifest(spark, edit, commits, manifest, requests and requests.keys, hash_key, since,
                                       plan.deleted_ids() if plan else None)
        detail.update(rewritten="yes" if rewritten else "no: the edit read the planned version")
    report = _committed_report(spark, report, edit, commits, manifest, rewritten)
    if ledger:
        ledger.record(run_id, "committed", report)
    return report


def _committed_report(spark: SparkSession, report: RunReport, edit: LiveEdit, commits: list[RunCommit],
                      manifest: TableRef, rewritten: bool) -> RunReport:
    """The report of a committed in-place edit: the planned version (the KL contract's) beside the
    versions the commits read and made, the rows others added in between, what each reason deleted and
    the files the commits removed (``verify`` checks those are gone after a purge)."""
    table, planned, read = edit.table, report.source_version, commits[0].read_version
    counts = {r["reason"]: int(r["count"]) for r in manifest.read(spark).where(F.col("run_id") == edit.run_id)
              .groupBy("reason").count().collect()} if rewritten else \
        {"planned": report.deleted, "request": report.deleted_requested}
    rows_then, rows_now = (0, 0) if read == planned else (table.read(spark, version=planned).count(),
                                                           table.read(spark, version=read).count())
    return dataclasses.replace(
        report, source_version_written=commits[0].version, commits=list(commits), source_version_read_by_edit=read,
        commits_by_others_before_edit=read - planned, net_rows_added_before_edit=rows_now - rows_then,
        deleted_committed=sum(v for k, v in counts.items() if k != "request"),
        deleted_requested=counts.get("request", 0),
        removed_files=removed_files(spark, table, [c.version for c in commits]),
        manifest_version=manifest.latest_version(spark), finished_at=_now())


def _with_version(report: RunReport, version: int) -> RunReport:
    return dataclasses.replace(report, output_version=version, finished_at=_now())


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()
