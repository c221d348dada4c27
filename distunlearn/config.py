"""The job's configuration: one typed object, loaded from a TOML/JSON file and overridden by flags."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from distunlearn.core.gaussian import COVARIANCES
from distunlearn.core.rules import DOWNSTREAM_RULES, RULES
from distunlearn.errors import DistunlearnError, ParameterError, UsageError, config_key
from distunlearn.spark.keys import DEFAULT_BROADCAST_LIMIT_MB
from distunlearn.spark.table import TableRef

RULE_CHOICES = (*RULES, *DOWNSTREAM_RULES, "auto")
OBJECTIVES = ("kl", "downstream")
HASH_KEY_ENV = "DISTUNLEARN_HASH_KEY"
#: ``max_iter`` and ``reg_param`` of the default logistic regression when not given.
LR_DEFAULTS = {"max_iter": 100, "reg_param": 1e-4}
LEDGER_NAME = "distunlearn_ledger"


@dataclass(frozen=True)
class SourceConfig:
    """The source, its domains and the model settings shared by ``unlearn`` and ``evaluate``.

    Field names are the flags with ``_`` for ``-``; ``load`` reads them from a TOML/JSON file, then flags.
    """

    source: "str | DataFrame"
    unwanted: str
    format: str = "delta"
    id_col: str = "id"
    vector_col: str = "embedding"
    retained: str | None = None
    seed: int = 0
    ridge: float = 1e-6
    covariance: str = "ridge"
    order_chunks: int | None = None
    checkpoint_dir: str | None = None
    report: str | None = None
    spark_conf: dict = field(default_factory=dict)
    label_col: str | None = None
    test_fraction: float = 0.2
    classifier: str = "LogisticRegression"
    classifier_params: dict = field(default_factory=dict)
    max_iter: int | None = None
    reg_param: float | None = None
    rounds: int = 10

    @property
    def source_table(self) -> TableRef | None:
        """The source as a table reference (None for a DataFrame given to the Python API)."""
        return TableRef.parse(self.source) if isinstance(self.source, str) else None

    def __post_init__(self):
        if isinstance(self.source, str):
            TableRef.parse(self.source)  # a malformed name fails here, before any work
        if self.format not in ("delta", "parquet"):
            raise ParameterError(f"{{format}} must be delta or parquet, got {self.format!r}", "format")
        if not (isinstance(self.ridge, (int, float)) and math.isfinite(self.ridge) and self.ridge >= 0):
            raise ParameterError(f"{{ridge}} must be a finite number >= 0, got {self.ridge}", "ridge")
        if self.covariance not in COVARIANCES:
            raise ParameterError(f"{{covariance}} must be one of {', '.join(COVARIANCES)}, got {self.covariance!r}",
                                 "covariance")
        if self.order_chunks is not None and self.order_chunks < 1:
            raise ParameterError("{order_chunks} must be >= 1", "order_chunks")
        if not (isinstance(self.test_fraction, (int, float)) and 0 < self.test_fraction < 1):
            raise ParameterError(f"{{test_fraction}} must be between 0 and 1, got {self.test_fraction}", "test_fraction")
        if (self.max_iter is not None and self.max_iter < 1) or \
                (self.reg_param is not None and not (math.isfinite(self.reg_param) and self.reg_param >= 0)):
            raise ParameterError("{max_iter} must be >= 1 and {reg_param} a finite number >= 0", "max_iter", "reg_param")
        if not (isinstance(self.rounds, int) and 1 <= self.rounds <= 1000):
            raise ParameterError(f"{{rounds}} must be an integer from 1 to 1000, got {self.rounds}", "rounds")
        if not isinstance(self.classifier_params, dict):
            raise ParameterError("{classifier_params} must be a table of the classifier's params, e.g. {maxDepth = 5}",
                                 "classifier_params")

    @property
    def downstream_classifier(self) -> "Classifier":
        """The downstream classifier: ``max_iter`` and ``reg_param`` (defaults ``LR_DEFAULTS`` for the logistic
        regression) set its ``maxIter`` and ``regParam``; given for a classifier without them, an error."""
        from distunlearn.spark.downstream import Classifier

        lr = self.classifier.rpartition(".")[2] == "LogisticRegression"
        params = {}
        for key, param in (("max_iter", "maxIter"), ("reg_param", "regParam")):
            value = getattr(self, key)
            if value is not None and not Classifier(self.classifier).estimator().hasParam(param):
                raise ParameterError(f"{{{key}}} does not apply to {self.classifier} (no {param})", key)
            if value is not None or lr:
                params[param] = LR_DEFAULTS[key] if value is None else value
        return Classifier(self.classifier, {**params, **self.classifier_params})

    @classmethod
    def load(cls, path: str | None = None, **overrides):
        """Keys from ``path`` (TOML or JSON), then every override that is not None."""
        values = read_config_file(path) if path else {}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if cls is EvaluateConfig:
            check_renamed(overrides)
            check_renamed(values, config_file=path)
        values.update(overrides)
        check_keys(values, cls, "unknown configuration key(s)")
        for required in ("source", "unwanted"):
            if not values.get(required):
                raise ParameterError(f"{{{required}}} is required (flag or config key {required!r})", required)
        return cls(**values)


@dataclass(frozen=True)
class UnlearnConfig(SourceConfig):
    """Everything ``distunlearn unlearn`` needs. ``objective`` "kl" meets the KL thresholds; "downstream"
    finds the budget at which a classifier retrained on the edited rows forgets (``--downstream-target``)."""

    alpha: float | None = None
    epsilon: float | None = None
    alpha_rel: float | None = None
    epsilon_rel: float | None = None
    rule: str = "auto"
    output: str | None = None
    manifest: str | None = None
    dry_run: bool = False
    run_id: str | None = None
    in_place: bool = False
    requests: str | None = None
    request_key: str | None = None
    purge: bool = False
    retention_hours: float | None = None
    only_writer: bool = False
    hash_ids: bool = False
    ledger: str | None = None
    max_retries: int = 5
    broadcast_limit_mb: float = DEFAULT_BROADCAST_LIMIT_MB
    objective: str = "kl"
    downstream_target: float = 0.5
    retained_tolerance: float = 0.01
    budget_steps: int = 100

    def __post_init__(self):
        super().__post_init__()
        for name in ("output", "manifest", "ledger", "requests"):
            if isinstance(getattr(self, name), str):
                TableRef.parse(getattr(self, name))
        if self.rule not in RULE_CHOICES:
            raise ParameterError(f"{{rule}} must be one of {', '.join(RULE_CHOICES)}, got {self.rule!r}", "rule")
        for name in ("alpha", "epsilon", "alpha_rel", "epsilon_rel"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ParameterError(f"{{{name}}} must be a finite number >= 0, got {value}", name)
        if self.alpha is not None and self.alpha_rel is not None:
            raise ParameterError("give only one of {alpha} and {alpha_rel}", "alpha", "alpha_rel")
        if self.epsilon is not None and self.epsilon_rel is not None:
            raise ParameterError("give only one of {epsilon} and {epsilon_rel}", "epsilon", "epsilon_rel")
        if self.in_place and self.output:
            raise ParameterError("give either {output} (a new edited table) or {in_place=True}, not both", "output",
                                 "in_place")
        if not (self.dry_run or self.output or self.in_place):
            raise ParameterError("give {output=PATH} for a new edited table, {in_place=True}, or {dry_run=True} to plan "
                                 "only", "output", "in_place", "dry_run")
        if self.in_place and (self.format != "delta" or self.source_table is None):
            raise ParameterError("{in_place=True} edits a Delta table given by its path, URI or catalog name "
                                 "(a Parquet source or a DataFrame cannot be edited in place)", "in_place")
        if self.purge and not self.in_place:
            raise ParameterError("{purge=True} erases deleted rows physically from the source: it needs {in_place=True}",
                                 "purge", "in_place")
        if self.retention_hours is not None and not (math.isfinite(self.retention_hours) and self.retention_hours >= 0):
            raise ParameterError(f"{{retention_hours}} must be a finite number >= 0, got {self.retention_hours}",
                                 "retention_hours")
        if self.objective not in OBJECTIVES:
            raise ParameterError(f"{{objective}} must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}",
                                 "objective")
        if self.objective != "downstream" and self.rule in DOWNSTREAM_RULES:
            raise ParameterError(f"{{rule={self.rule}}} retrains a classifier: it needs {{objective=downstream}}", "rule",
                                 "objective")
        if self.objective == "downstream":
            if not self.label_col:
                raise ParameterError("{objective=downstream} needs {label_col}, the class label the classifier learns",
                                     "objective", "label_col")
            if self.requests is not None:
                raise ParameterError("{objective=downstream} does not take {requests}: erase requested rows in a "
                                     "run of their own first", "objective", "requests")
            if self.alpha is not None or self.alpha_rel is not None:
                raise ParameterError("{objective=downstream} replaces {alpha}/{alpha_rel} by {downstream_target}",
                                     "objective", "alpha", "alpha_rel", "downstream_target")
        if not (isinstance(self.downstream_target, (int, float)) and 0 < self.downstream_target <= 1):
            raise ParameterError(f"{{downstream_target}} must be in (0, 1], got {self.downstream_target}",
                                 "downstream_target")
        if not (isinstance(self.retained_tolerance, (int, float)) and 0 <= self.retained_tolerance <= 1):
            raise ParameterError(f"{{retained_tolerance}} must be between 0 and 1, got {self.retained_tolerance}",
                                 "retained_tolerance")
        if not (isinstance(self.budget_steps, int) and 2 <= self.budget_steps <= 100_000):
            raise ParameterError(f"{{budget_steps}} must be an integer from 2 to 100000, got {self.budget_steps}",
                                 "budget_steps")
        if self.max_retries < 0:
            raise ParameterError("{max_retries} must be >= 0", "max_retries")
        if not (isinstance(self.broadcast_limit_mb, (int, float)) and math.isfinite(self.broadcast_limit_mb)
                and self.broadcast_limit_mb >= 0):
            raise ParameterError(f"{{broadcast_limit_mb}} must be a finite number >= 0, got {self.broadcast_limit_mb}",
                                 "broadcast_limit_mb")

    @property
    def thresholds(self) -> dict:
        """Threshold arguments with the defaults alpha_rel = 0.5 ("halve") and epsilon_rel = 1.0."""
        return dict(alpha=self.alpha, epsilon=self.epsilon,
                    alpha_rel=0.5 if self.alpha is None and self.alpha_rel is None else self.alpha_rel,
                    epsilon_rel=1.0 if self.epsilon is None and self.epsilon_rel is None else self.epsilon_rel)

    @property
    def rules(self) -> tuple[str, ...]:
        """The rules evaluated: one, or ``auto``'s (with ``DOWNSTREAM_RULES`` under the downstream objective)."""
        if self.rule != "auto":
            return (self.rule,)
        return RULES + DOWNSTREAM_RULES if self.objective == "downstream" else RULES

    @property
    def output_table(self) -> TableRef | None:
        return TableRef.parse(self.output) if self.output else None

    @property
    def requests_table(self) -> TableRef | None:
        return TableRef.parse(self.requests) if isinstance(self.requests, str) else None

    @property
    def manifest_table(self) -> TableRef | None:
        """``--manifest``, or ``<output>_manifest`` beside the output (``<source>_manifest`` in place)."""
        if self.manifest:
            return TableRef.parse(self.manifest)
        edited = self.output_table or (self.source_table if self.in_place else None)
        return edited.child("_manifest") if edited else None

    @property
    def ledger_table(self) -> TableRef | None:
        """``--ledger``, or ``distunlearn_ledger`` in the manifest's folder (or database)."""
        if self.ledger:
            return TableRef.parse(self.ledger)
        manifest = self.manifest_table
        return default_ledger(manifest) if manifest else None

    @property
    def purge_retention_hours(self) -> float | None:
        """``--retention-hours``; None (the default): the table's own ``delta.deletedFileRetentionDuration``."""
        return None if self.retention_hours is None else float(self.retention_hours)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the settings that decide the deletion set (not paths of outputs or run id)."""
        keys = ("source", "format", "id_col", "vector_col", "unwanted", "retained", "alpha", "epsilon", "alpha_rel",
                "epsilon_rel", "rule", "seed", "ridge", "requests", "request_key")
        if self.covariance != "ridge":   # keys added later count only when set: older runs keep their fingerprint
            keys += ("covariance",)
        if self.objective != "kl":
            keys += ("objective", "downstream_target", "retained_tolerance", "budget_steps", "label_col",
                     "test_fraction", "classifier", "classifier_params", "max_iter", "reg_param")
            keys += ("rounds",) if set(self.rules) & set(DOWNSTREAM_RULES) else ()
        values = {k: getattr(self, k) for k in keys}
        values.update({k: d for k, d in LR_DEFAULTS.items() if k in values and values[k] is None})  # as before
        blob = json.dumps(values, sort_keys=True, default=lambda v: f"<{type(v).__name__}>")
        return hashlib.sha256(blob.encode()).hexdigest()

    def hash_key(self) -> bytes:
        """The HMAC key of ``--hash-ids``, from the environment variable ``DISTUNLEARN_HASH_KEY``."""
        return env_hash_key("{hash_ids=True} needs", "hash_ids")


@dataclass(frozen=True)
class EvaluateConfig(SourceConfig):
    """Everything ``distunlearn evaluate`` needs: the rules to compare (``rule``, a comma list or a tuple),
    how finely to sample their curves (``budget_steps`` N: the budgets 0, 1/N, ..., 1 of the unwanted rows) and
    the objective (``downstream`` adds a classifier retrained at the budgets of ``downstream_grid``)."""

    rule: tuple = RULES
    budget_steps: int = 100
    objective: str = "kl"
    downstream_grid: tuple = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)

    @property
    def downstream(self) -> bool:
        """Whether the downstream classifier is retrained (``objective = "downstream"``)."""
        return self.objective == "downstream"

    def __post_init__(self):
        super().__post_init__()
        rules = tuple(r.strip() for r in self.rule.split(",")) if isinstance(self.rule, str) else tuple(self.rule)
        grid = self.downstream_grid
        grid = tuple(sorted(float(g) for g in (grid.split(",") if isinstance(grid, str) else grid)))
        object.__setattr__(self, "rule", rules)
        object.__setattr__(self, "downstream_grid", grid)
        if self.objective not in OBJECTIVES:
            raise ParameterError(f"{{objective}} must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}",
                                 "objective")
        known = RULES + DOWNSTREAM_RULES if self.downstream else RULES
        if not rules or any(r not in known for r in rules):
            raise ParameterError(f"{{rule}} takes a comma list of {', '.join(known)}, got {','.join(rules)!r}"
                                 + ("" if self.downstream else
                                    f" ({', '.join(DOWNSTREAM_RULES)}: with {{objective=downstream}})"),
                                 "rule", "objective")
        if not (isinstance(self.budget_steps, int) and 1 <= self.budget_steps <= 100_000):
            raise ParameterError(f"{{budget_steps}} must be an integer from 1 to 100000, got {self.budget_steps}",
                                 "budget_steps")
        if self.downstream and not self.label_col:
            raise ParameterError("{objective=downstream} needs {label_col}, the class label the classifier learns",
                                 "objective", "label_col")
        if not grid or any(not (0 <= g <= 1) for g in grid):
            raise ParameterError("{downstream_grid} takes fractions between 0 and 1, e.g. 0,0.25,0.5,1",
                                 "downstream_grid")

    @property
    def rules(self) -> tuple[str, ...]:
        """The rules compared, in order (``rule`` as a tuple)."""
        return self.rule


#: ``evaluate``'s config keys (and flags) of an earlier spelling: each stops the command with one line naming
#: its replacement rather than being read some other way.
RENAMED = {
    "rules": "{rule} (a comma list of rules, as before)",
    "points": "{budget_steps}, which counts steps between budgets: {points=101} is {budget_steps=100}",
    "downstream": "{objective=downstream}",
}


class RenamedError(UsageError, ParameterError):
    """An old spelling ``old`` of a parameter (a key of ``RENAMED``), a flag or a keyword, named with its
    replacement (exit code 2)."""

    def __init__(self, old: str):
        ParameterError.__init__(self, f"{{{old}}} is no longer taken: use {RENAMED[old]}", old, *RENAMED_TO)


#: The parameters the old spellings of ``RENAMED`` became.
RENAMED_TO = ("rule", "budget_steps", "objective")


def check_renamed(values, config_file: str | None = None) -> None:
    """Stop at the first of ``values`` (keyword names, or the keys of ``config_file``) that is an old
    spelling (``RENAMED``): a ``RenamedError``, or for a file's key one line in the file's own terms."""
    for old in RENAMED:
        if old in values:
            if config_file is None:
                raise RenamedError(old)
            new = ParameterError(RENAMED[old], old, *RENAMED_TO).spelled(config_key)
            raise UsageError(f"config file {config_file}: key {old} is no longer taken: use {new}")


def check_keys(values: dict, cls, error: str, exclude: tuple = ()) -> None:
    """One error line, ``error`` then the keys of ``values`` that are not fields of the dataclass ``cls``."""
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)} - set(exclude))
    if unknown:
        raise DistunlearnError(f"{error}: {', '.join(unknown)}")


def env_hash_key(needed_by: str, *params: str) -> bytes:
    """The HMAC key of hashed ids and subject keys, from the environment variable ``DISTUNLEARN_HASH_KEY``;
    one error line starting with ``needed_by`` when it is not set (a ``ParameterError`` template when it names
    ``params``)."""
    key = os.environ.get(HASH_KEY_ENV, "")
    if not key:
        text = f"{needed_by} the HMAC key in the environment variable {HASH_KEY_ENV}"
        raise ParameterError(text, *params) if params else DistunlearnError(text)
    return key.encode("utf-8")


def default_ledger(manifest: TableRef) -> TableRef:
    """The ledger of every command when none is given: ``distunlearn_ledger`` beside the manifest."""
    return manifest.beside(LEDGER_NAME)


def read_config_file(path: str) -> dict:
    """A flat table of settings; ``-`` in keys reads as ``_``."""
    p = Path(path)
    if not p.is_file():
        raise DistunlearnError(f"config file not found: {path}")
    try:
        text = p.read_text()
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise DistunlearnError(f"config file {path} does not parse: {exc}") from None
    return {k.replace("-", "_"): v for k, v in data.items()}
