"""The erasure run's configuration: the requests table, and the tables that hold a subject's rows."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from distunlearn.config import LEDGER_NAME, UnlearnConfig, check_keys, env_hash_key, read_config_file
from distunlearn.errors import DistunlearnError
from distunlearn.spark.keys import DEFAULT_BROADCAST_LIMIT_MB
from distunlearn.spark.table import TableRef

STATUS_NAME = "distunlearn_erasure_status"
DEFAULT_DUE_DAYS = 30


@dataclass(frozen=True)
class ErasedTable:
    """One table holding a subject's rows: matched on ``key`` against the subject key, or (``via``) against
    the ``via_key`` values of the subject's rows in another listed table (``embeddings.post_id`` takes the
    post ids of the subject's rows in ``posts``). ``unlearn``: the table's distributional part, the
    settings of ``distunlearn unlearn`` (``unwanted``, thresholds, ...), run with the requests.

    ``retention_hours`` below the table's own retention is taken only with ``only_writer = true``: the
    documented condition that no other process writes the table or reads its older versions."""

    name: str
    source: str
    key: str
    via: str | None = None
    via_key: str | None = None
    unlearn: dict = field(default_factory=dict)
    retention_hours: float | None = None
    only_writer: bool = False

    @property
    def table(self) -> TableRef:
        return TableRef.parse(self.source)

    @property
    def via_column(self) -> str:
        """The column of the ``via`` table whose values this table's ``key`` takes."""
        return self.via_key or self.key


@dataclass(frozen=True)
class ErasureConfig:
    """Everything ``distunlearn erase`` and ``erasure-status`` need."""

    requests: str
    tables: tuple[ErasedTable, ...]
    subject_col: str = "user_id"
    received_col: str = "received_at"
    request_id_col: str | None = None
    due_days: float = DEFAULT_DUE_DAYS
    status: str | None = None
    ledger: str | None = None
    certificates: str | None = None
    max_retries: int = 5
    broadcast_limit_mb: float = DEFAULT_BROADCAST_LIMIT_MB
    spark_conf: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("requests", "status", "ledger"):
            if getattr(self, name):
                TableRef.parse(getattr(self, name))
        if not self.tables:
            raise DistunlearnError("the erasure config lists no table ([tables.NAME] with source and key)")
        names = [t.name for t in self.tables]
        for t in self.tables:
            t.table  # a malformed table name fails here
            if t.via is not None:
                if t.via not in names or t.via == t.name:
                    raise DistunlearnError(f"tables.{t.name}.via names {t.via!r}, which is not another listed table")
                if self.table(t.via).via is not None:
                    raise DistunlearnError(f"tables.{t.name}.via: {t.via!r} takes its keys through another table "
                                           "itself; one join is supported")
            if t.retention_hours is not None:
                if not (isinstance(t.retention_hours, (int, float)) and math.isfinite(t.retention_hours)
                        and t.retention_hours >= 0):
                    raise DistunlearnError(f"tables.{t.name}.retention_hours must be a number >= 0")
                if t.only_writer is not True:
                    raise DistunlearnError(f"tables.{t.name}.retention_hours overrides the table's own retention: "
                                           "give it only with only_writer = true (no other process writes the "
                                           "table or reads its older versions)")
        if not (isinstance(self.due_days, (int, float)) and self.due_days > 0):
            raise DistunlearnError(f"due_days must be a number > 0, got {self.due_days}")
        if self.max_retries < 0:
            raise DistunlearnError("max_retries must be >= 0")

    def table(self, name: str) -> ErasedTable:
        return next(t for t in self.tables if t.name == name)

    @property
    def order(self) -> tuple[ErasedTable, ...]:
        """Tables keyed through another first: the table giving their keys still holds the subject's rows."""
        return tuple(t for t in self.tables if t.via) + tuple(t for t in self.tables if not t.via)

    @property
    def requests_table(self) -> TableRef:
        return TableRef.parse(self.requests)

    @property
    def ledger_table(self) -> TableRef:
        """``ledger``, or ``distunlearn_ledger`` beside the requests table."""
        return TableRef.parse(self.ledger) if self.ledger else self.requests_table.beside(LEDGER_NAME)

    @property
    def status_table(self) -> TableRef:
        """``status``, or ``distunlearn_erasure_status`` beside the ledger."""
        return TableRef.parse(self.status) if self.status else self.ledger_table.beside(STATUS_NAME)

    @property
    def locations(self) -> list[str]:
        """Every table the runs read or write (a local session loads the file systems they live on)."""
        return [self.requests, self.status_table.text, self.ledger_table.text, *(t.source for t in self.tables)]

    def unlearn_config(self, t: ErasedTable, requests, run_id: str) -> UnlearnConfig:
        """The in-place ``unlearn`` run of a table's distributional part, with the subject's keys as requests."""
        settings = {"source": t.source, "in_place": True, "requests": requests, "request_key": t.key,
                    "run_id": run_id, "ledger": self.ledger_table.text, "hash_ids": True,
                    "max_retries": self.max_retries, "broadcast_limit_mb": self.broadcast_limit_mb, **t.unlearn}
        return UnlearnConfig.load(None, **settings)

    @staticmethod
    def hash_key() -> bytes:
        """The HMAC key of subject keys (the status never holds a raw key)."""
        return env_hash_key("erasure keeps subject keys as HMACs: it needs")

    @classmethod
    def load(cls, path: str, **overrides) -> "ErasureConfig":
        """The TOML/JSON file, then every override that is not None."""
        values = read_config_file(path)
        values.update({k: v for k, v in overrides.items() if v is not None})
        tables = values.pop("tables", None)
        if not isinstance(tables, dict) or not tables:
            raise DistunlearnError(f"{path}: list the tables as [tables.NAME] with source and key")
        check_keys(values, cls, "unknown erasure configuration key(s)", exclude=("tables",))
        if not values.get("requests"):
            raise DistunlearnError("the erasure config needs requests, the table of erasure requests")
        return cls(tables=tuple(_table(name, spec) for name, spec in tables.items()), **values)


def _table(name: str, spec) -> ErasedTable:
    if not isinstance(spec, dict):
        raise DistunlearnError(f"tables.{name} must be a table with source and key")
    spec = {k.replace("-", "_"): v for k, v in spec.items()}
    check_keys(spec, ErasedTable, f"tables.{name}: unknown key(s)", exclude=("name",))
    for required in ("source", "key"):
        if not spec.get(required):
            raise DistunlearnError(f"tables.{name} needs {required}")
    if spec.get("unlearn") and not spec["unlearn"].get("unwanted"):
        raise DistunlearnError(f"tables.{name}.unlearn needs unwanted, the SQL predicate of the domain to forget")
    return ErasedTable(name=name, **spec)
