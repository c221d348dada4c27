"""The job's configuration: one typed object, loaded from a TOML/JSON file and overridden by flags."""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from distunlearn.core.rules import RULES
from distunlearn.errors import DistunlearnError

RULE_CHOICES = (*RULES, "auto")


@dataclass(frozen=True)
class UnlearnConfig:
    """Everything ``distunlearn unlearn`` needs. Field names are the flags with ``_`` for ``-``."""

    source: str
    unwanted: str
    format: str = "delta"
    id_col: str = "id"
    vector_col: str = "embedding"
    retained: str | None = None
    alpha: float | None = None
    epsilon: float | None = None
    alpha_rel: float | None = None
    epsilon_rel: float | None = None
    rule: str = "auto"
    seed: int = 0
    ridge: float = 1e-6
    output: str | None = None
    manifest: str | None = None
    report: str | None = None
    dry_run: bool = False
    run_id: str | None = None
    order_chunks: int | None = None
    spark_conf: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.format not in ("delta", "parquet"):
            raise DistunlearnError(f"--format must be delta or parquet, got {self.format!r}")
        if self.rule not in RULE_CHOICES:
            raise DistunlearnError(f"--rule must be one of {', '.join(RULE_CHOICES)}, got {self.rule!r}")
        if not (isinstance(self.ridge, (int, float)) and math.isfinite(self.ridge) and self.ridge >= 0):
            raise DistunlearnError(f"--ridge must be a finite number >= 0, got {self.ridge}")
        for name in ("alpha", "epsilon", "alpha_rel", "epsilon_rel"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise DistunlearnError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
        if self.alpha is not None and self.alpha_rel is not None:
            raise DistunlearnError("give only one of --alpha and --alpha-rel")
        if self.epsilon is not None and self.epsilon_rel is not None:
            raise DistunlearnError("give only one of --epsilon and --epsilon-rel")
        if self.order_chunks is not None and self.order_chunks < 1:
            raise DistunlearnError("--order-chunks must be >= 1")
        if not self.dry_run and not self.output:
            raise DistunlearnError("give --output PATH for the edited table, or --dry-run to plan only")

    @property
    def thresholds(self) -> dict:
        """Threshold arguments with the defaults alpha_rel = 0.5 ("halve") and epsilon_rel = 1.0."""
        return dict(alpha=self.alpha, epsilon=self.epsilon,
                    alpha_rel=0.5 if self.alpha is None and self.alpha_rel is None else self.alpha_rel,
                    epsilon_rel=1.0 if self.epsilon is None and self.epsilon_rel is None else self.epsilon_rel)

    @property
    def rules(self) -> tuple[str, ...]:
        return RULES if self.rule == "auto" else (self.rule,)

    @property
    def manifest_path(self) -> str | None:
        """``--manifest``, or ``<output>_manifest`` beside the output table."""
        if self.manifest or not self.output:
            return self.manifest
        return self.output.rstrip("/") + "_manifest"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, path: str | None = None, **overrides) -> "UnlearnConfig":
        """Keys from ``path`` (TOML or JSON), then every override that is not None."""
        values = read_config_file(path) if path else {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DistunlearnError(f"unknown configuration key(s): {', '.join(unknown)}")
        for required in ("source", "unwanted"):
            if not values.get(required):
                raise DistunlearnError(f"--{required} is required (flag or config key {required!r})")
        return cls(**values)


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
