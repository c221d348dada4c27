"""HMAC-SHA256 of row ids, so a manifest can prove a deletion without holding the raw id."""
from __future__ import annotations

import hashlib
import hmac

import pyarrow as pa


def hmac_hex(key: bytes, value) -> str:
    """Lowercase hex HMAC-SHA256(key, str(value))."""
    return hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()


def id_hasher(key: bytes, column: str = "id"):
    """mapInArrow: replace ``column`` by its HMAC hex string; other columns pass through."""

    def hash_ids(batches):
        for batch in batches:
            i = batch.schema.get_field_index(column)
            hashed = pa.array([hmac_hex(key, v) for v in batch.column(i).to_pylist()], pa.string())
            yield batch.set_column(i, column, hashed)

    return hash_ids
