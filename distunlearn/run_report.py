"""The run report: one typed record of an ``unlearn`` run, read and written by the report file, the ledger,
``verify``, the Python API and lineage.

``to_dict`` is the JSON written, with its ``schema_version``; ``from_dict`` reads it back, and reads the
reports of earlier releases too: version 1 is the format before the version was written (no
``schema_version`` key). A newer version stops with one line naming it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from distunlearn.domains import Domains
from distunlearn.errors import DistunlearnError

SCHEMA_VERSION = 2
_REQUESTS_FRAME = "<DataFrame>"   # version 1's ``requests`` when the requests were a DataFrame


@dataclass(frozen=True)
class RuleEntry:
    """What one evaluated rule needs: its smallest deletion set and the KLs after it, or (infeasible) the
    best alpha it reaches at epsilon."""

    feasible: bool
    deleted: int | None
    deleted_fraction: float | None
    kl_removal_after: float | None
    kl_preservation_after: float | None
    best_alpha_at_epsilon: float | None


@dataclass(frozen=True)
class RequestsRead:
    """The deletion requests the run matched: distinct keys, null keys, and the version read."""

    keys: int
    null_keys: int
    version: int | None


@dataclass(frozen=True)
class RunCommit:
    """One MERGE commit of the run: its version, the version it read, its place among the run's MERGEs
    (0: the planned rows, 1: the requested keys) and the rows it deleted (Delta's metric)."""

    version: int
    read_version: int
    step: int
    rows_deleted: int | None
    committed_at: str | None = None   # the commit's timestamp (ISO, UTC)


@dataclass(frozen=True)
class Purge:
    """What a purge did: the retention asked for, the table's and the one VACUUM applied (and where that
    came from), when the removed files may go, and Delta's metrics of the REORG and the VACUUM."""

    retention_hours: float | None = None
    table_retention_hours: float | None = None
    id_in_log_statistics: bool | None = None
    reorg: dict[str, int] | None = None     # REORG's version and operation metrics; None: no deletion vectors
    tombstoned_at: str | None = None
    erasable_from: str | None = None
    vacuum_started_at: str | None = None
    vacuum: dict[str, int] = field(default_factory=dict)
    retention_applied_hours: float | None = None
    retention_applied_from: str | None = None
    safety_check_lowered: bool | None = None

    @property
    def reorg_version(self) -> int | None:
        return (self.reorg or {}).get("version")

    def retention_applied(self) -> str:
        """The retention the VACUUM applied and where it came from (older reports: the one asked for)."""
        if self.retention_applied_hours is None:
            return "?" if self.retention_hours is None else f"{self.retention_hours:g} h"
        return f"{self.retention_applied_hours:g} h from {self.retention_applied_from}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Purge":
        return cls(**_known(cls, data))


@dataclass(frozen=True, kw_only=True)
class RunReport:
    """Every figure of a run: the model and thresholds, what each evaluated rule would need (``rules``),
    the rule chosen and the KLs it reaches, and what the run read and wrote. Fields after ``seed`` are
    filled as the run goes on: the in-place edit's commits, the removed files, the purge."""

    run_id: str
    objective: str = "kl"
    rule: str
    rule_requested: str
    n_unwanted: int
    n_retained: int
    dims: int
    kappa: float
    alpha: float
    epsilon: float
    thresholds_requested: dict[str, float | None]
    alpha_max_at_epsilon: float
    deleted: int
    deleted_requested: int
    feasible: bool
    kl_removal_before: float
    kl_removal_after: float | None
    kl_preservation_before: float
    kl_preservation_after: float | None
    rules: dict[str, RuleEntry]
    source: str
    source_format: str
    source_version: int | None
    in_place: bool
    requests: str | None = None               # the requests table; None: none, or a DataFrame (see requests_read)
    requests_read: RequestsRead | None = None
    source_version_written: int | None = None
    output: str | None = None
    output_version: int | None = None
    manifest: str | None = None
    manifest_version: int | None = None
    dry_run: bool
    hash_ids: bool
    domains: Domains
    downstream: dict | None = None            # the downstream objective's search: its own record (fits, target)
    ridge: float
    covariance: str
    shrinkage: float | None = None
    seed: int
    commits: list[RunCommit] | None = None    # the in-place edit's MERGE commits
    source_version_read_by_edit: int | None = None
    commits_by_others_before_edit: int | None = None
    net_rows_added_before_edit: int | None = None
    deleted_committed: int | None = None
    removed_files: list[str] | None = None    # files the run's commits removed or wrote as change data
    finished_at: str | None = None
    purge: Purge | None = None
    repeated: bool = False                    # this run id had already succeeded: nothing was done again

    def to_dict(self) -> dict:
        """The JSON written (report file, ledger), its schema version first."""
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "RunReport":
        """A report as written by this release or an earlier one; one error line for any other version."""
        version = data.get("schema_version", 1)
        if version not in (1, SCHEMA_VERSION):
            raise DistunlearnError(
                f"run {data.get('run_id')}'s report has schema version {version}; this distunlearn reads versions "
                f"1 to {SCHEMA_VERSION}: read it with a release that writes version {version}")
        if data.get("kind") == "erasure":
            raise DistunlearnError(f"run {data.get('run_id')} is an erasure run, not an unlearn run: "
                                   "'distunlearn erasure-status' reports on it")
        if version == 1 and data.get("requests") == _REQUESTS_FRAME:
            data = {**data, "requests": None}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in data and f.default is dataclasses.MISSING]
        if missing:
            raise DistunlearnError(f"run {data.get('run_id')}'s report lacks {', '.join(missing)}")
        return cls(**{**_known(cls, data),
                      "rules": {rule: RuleEntry(**_known(RuleEntry, e)) for rule, e in data["rules"].items()},
                      "requests_read": None if data.get("requests_read") is None else
                      RequestsRead(**_known(RequestsRead, data["requests_read"])),
                      "domains": Domains(**_known(Domains, data["domains"])),
                      "commits": None if data.get("commits") is None else
                      [RunCommit(**_known(RunCommit, c)) for c in data["commits"]],
                      "purge": None if data.get("purge") is None else Purge.from_dict(data["purge"])})


def _known(cls, data: dict) -> dict:
    """The entries of ``data`` that are fields of ``cls`` (an earlier release's extra keys are dropped)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}
