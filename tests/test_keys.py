"""Sizing a key set before its join: broadcast under the limit, shuffle above."""
from pyspark.sql.types import IntegerType, LongType, StringType

from distunlearn.spark.keys import BROADCAST_JOIN, SHUFFLE_JOIN, KeySet, key_row_bytes


def test_key_width_by_type_and_longest_value():
    assert key_row_bytes(LongType()) == key_row_bytes(IntegerType()) == 16
    assert key_row_bytes(StringType(), 36) == 16 + 40      # a UUID, rounded up to 8 bytes
    assert key_row_bytes(StringType()) == 16 + 1024         # longest value unknown: assume 1 KiB


def test_join_hint_follows_the_measured_size():
    uuids = KeySet(1_000_000, key_row_bytes(StringType(), 36))          # 56 MB
    assert uuids.bytes == 56_000_000 and uuids.join_hint(64) == BROADCAST_JOIN
    assert uuids.join_hint(50) == SHUFFLE_JOIN
    assert KeySet(5_000_000, key_row_bytes(LongType())).join_hint(64) == SHUFFLE_JOIN   # 80 MB
    assert KeySet(0, 16).join_hint(0) == SHUFFLE_JOIN and KeySet(4, 16).join_hint(1e-4) == BROADCAST_JOIN
