"""The run report of a plan, and its short human summary."""
from __future__ import annotations

import math

from distunlearn.core.selection import BudgetChoice, alpha_max
from distunlearn.domains import Domains
from distunlearn.run_report import RuleEntry, RunReport


def _num(x: float | None):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def _location(table) -> str | None:
    return None if table is None else table.location


def _rule_entry(choice: BudgetChoice, n_unwanted: int) -> RuleEntry:
    return RuleEntry(
        feasible=choice.feasible,
        deleted=choice.deleted,
        deleted_fraction=None if choice.deleted is None else choice.deleted / n_unwanted,
        kl_removal_after=_num(choice.removal),
        kl_preservation_after=_num(choice.preservation),
        best_alpha_at_epsilon=_num(choice.best_alpha) if not choice.feasible else None,
    )


def build_report(plan) -> RunReport:
    """The plan's report; ``rules`` holds what each evaluated rule would need. The edit, the manifest and
    the purge fill in what they wrote (``dataclasses.replace``)."""
    cfg, kl, chosen = plan.config, plan.kl, plan.chosen
    removal0, preservation0 = kl.before
    return RunReport(
        run_id=plan.run_id,
        objective=cfg.objective,
        rule=chosen.rule,
        rule_requested=cfg.rule,
        n_unwanted=kl.n1,
        n_retained=kl.n2,
        dims=plan.model.dim,
        kappa=kl.kappa,
        alpha=plan.thresholds.alpha,
        epsilon=plan.thresholds.epsilon,
        thresholds_requested=cfg.thresholds,
        alpha_max_at_epsilon=alpha_max(kl.kappa, plan.thresholds.epsilon),
        deleted=chosen.deleted if chosen.feasible else 0,
        deleted_requested=plan.n_requested,
        feasible=chosen.feasible,
        kl_removal_before=removal0,
        kl_removal_after=_num(chosen.removal),
        kl_preservation_before=preservation0,
        kl_preservation_after=_num(chosen.preservation),
        rules={c.rule: _rule_entry(c, kl.n1) for c in plan.choices},
        source=plan.source.name,
        source_format=cfg.format,
        source_version=plan.source.version,
        in_place=cfg.in_place,
        requests=_location(cfg.requests_table) if cfg.requests is not None and cfg.requests_table else None,
        requests_read=plan.requests.record() if plan.requests else None,
        output=None if cfg.dry_run else _location(cfg.source_table if cfg.in_place else cfg.output_table),
        manifest=None if cfg.dry_run else _location(cfg.manifest_table),
        dry_run=cfg.dry_run,
        hash_ids=cfg.hash_ids,
        domains=Domains.of(cfg),
        downstream=plan.downstream,
        ridge=cfg.ridge,
        covariance=cfg.covariance,
        shrinkage=plan.model.shrinkage,
        seed=cfg.seed,
    )


def summary(r: RunReport) -> str:
    """A few lines for stdout: thresholds, one line per evaluated rule, and what was written."""
    lines = [
        f"distunlearn run {r.run_id}",
        f"  domains: {r.n_unwanted:,} unwanted rows, {r.n_retained:,} retained rows, "
        f"{r.dims} dims; kappa = KL(p1||p2) = {r.kappa:.4g}",
        (f"  targets: KL(p1||p_f) >= alpha = {r.alpha:.4g} (now {r.kl_removal_before:.4g}), "
         if r.objective == "kl" else "  targets: the downstream one below, and ")
        + f"KL(p2||p_f) <= epsilon = {r.epsilon:.4g} (now {r.kl_preservation_before:.4g}); "
        f"frontier alpha_max(epsilon) = {r.alpha_max_at_epsilon:.4g}",
        *(_downstream_lines(r.downstream) if r.downstream else []),
        *([f"  deletion requests: {r.deleted_requested:,} rows (deleted whatever their domain)"]
          if r.requests or r.requests_read else []),
        f"  {'rule':<25}{'deleted':>10}{'% unwanted':>12}{'KL(p1||p_f)':>14}{'KL(p2||p_f)':>14}",
    ]
    for rule, entry in r.rules.items():
        mark = "*" if rule == r.rule and r.feasible else " "
        if entry.feasible:
            lines.append(f"{mark} {rule:<25}{entry.deleted:>10,}{100 * entry.deleted_fraction:>11.1f}%"
                         f"{entry.kl_removal_after:>14.4g}{entry.kl_preservation_after:>14.4g}")
        else:
            best = entry.best_alpha_at_epsilon
            lines.append(f"{mark} {rule:<25}{'infeasible':>10}{'':>12}"
                         f"{'' if best is None else 'best ' + format(best, '.4g'):>14}{'':>14}")
    if not r.feasible:
        lines.append("  no rule meets both thresholds; nothing written")
    elif r.dry_run:
        lines.append(f"  dry run: would delete {r.deleted:,} rows by {r.rule}; nothing written")
    elif r.in_place:
        lines.append(f"  deleted {r.deleted:,} rows by {r.rule} and {r.deleted_requested:,} "
                     f"requested rows in place: {r.source} version {r.source_version_written}, "
                     f"manifest {r.manifest} (version {r.manifest_version})")
    else:
        lines.append(f"  deleted {r.deleted:,} rows by {r.rule}: edited table {r.output} "
                     f"(version {r.output_version}), manifest {r.manifest} (version {r.manifest_version})")
    if r.purge:
        reorg = r.purge.reorg
        lines.append(f"  purge: {'REORG rewrote ' + str(reorg.get('numRemovedFiles', 0)) + ' file(s), ' if reorg else ''}"
                     f"VACUUM (retain {r.purge.retention_applied()}) deleted "
                     f"{r.purge.vacuum.get('numDeletedFiles', 0)} file(s)"
                     + (f"; the files that held the deleted rows may go from {r.purge.erasable_from[:19]} "
                        "UTC, in the first purge after that" if r.purge.erasable_from else ""))
    if r.repeated:
        lines.append("  (this run id had already succeeded: nothing was done again)")
    return "\n".join(lines)


def _downstream_lines(down: dict) -> list[str]:
    target = down["target"]
    return [f"  objective downstream: {down['classifier']} on {down['label_col']!r}; forget-domain accuracy "
            f"{down['all_data']['forget_accuracy']:.3f} (all data) -> {down['full_removal']['forget_accuracy']:.3f} "
            f"(full removal), target <= {target['forget_accuracy_at_most']:.3f} with retained accuracy >= "
            f"{target['retained_accuracy_at_least']:.3f}; {down['fits_made']} fits, "
            f"{down['seconds_per_fit']:.2f} s a fit",
            *(f"    {rule}: {entry['note']}" + _order_cost(entry.get("order")) for rule, entry in down["rules"].items())]


def _order_cost(order: dict | None) -> str:
    """What a rule's order cost, when it took fits of its own."""
    return f" (its order: {order['fits']} fits, {order['seconds']:.1f} s)" if order and order["fits"] else ""
