"""Which rows a run reads, as the run's config and its report name them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Domains:
    """Which column is the id and the vector, and which rows are unwanted and retained (SQL predicates)."""

    id_col: str
    vector_col: str
    unwanted: str
    retained: str | None = None

    @classmethod
    def of(cls, config) -> "Domains":
        return cls(config.id_col, config.vector_col, config.unwanted, config.retained)
