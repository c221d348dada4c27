"""Joins of a key set (deleted ids, request keys) with a table: the keys are broadcast when their size,
known before the join, is under a limit (no shuffle of the table); above it both sides are shuffled.

A broadcast collects the keys on the driver, so its size is checked first: the row count comes from the
plan (budget plus requested rows) or one count of the request table, and the width of a string key from
the longest one seen. Vectors, scores and other per-row data are never broadcast.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql.types import BinaryType, DataType, StringType

SHUFFLE_JOIN = "shuffle_merge"
BROADCAST_JOIN = "broadcast"
DEFAULT_BROADCAST_LIMIT_MB = 64.0

_ROW_OVERHEAD = 16   # a one-column Spark row: null bits and the value's slot (or offset and length)


def variable_width(dtype: DataType) -> bool:
    """Whether keys of this type are as long as their values (strings, binary)."""
    return isinstance(dtype, (StringType, BinaryType))


def key_row_bytes(dtype: DataType, max_bytes: int | None = None) -> int:
    """Bytes of one key as Spark holds it in a row; ``max_bytes`` is the longest value of a string or
    binary key (unknown: 1 KiB assumed)."""
    if variable_width(dtype):
        width = 1024 if max_bytes is None else max_bytes
        return _ROW_OVERHEAD + -(-width // 8) * 8
    return _ROW_OVERHEAD


@dataclass(frozen=True)
class KeySet:
    """How many keys a join gets and an upper bound of their size."""

    rows: int
    row_bytes: int

    @property
    def bytes(self) -> int:
        return self.rows * self.row_bytes

    def join_hint(self, limit_mb: float) -> str:
        """``broadcast`` when the keys take at most ``limit_mb`` MiB, else (and always with a limit of 0) a
        shuffle (sort-merge) join."""
        return BROADCAST_JOIN if limit_mb > 0 and self.bytes <= limit_mb * 1024 * 1024 else SHUFFLE_JOIN

    def hinted(self, keys: DataFrame, limit_mb: float) -> DataFrame:
        return keys.hint(self.join_hint(limit_mb))
