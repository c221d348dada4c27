"""The moments' partials (packed triangles or, for few rows, the rows) and their streaming merge, without Spark."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pyarrow as pa

from distunlearn.core.moments import DomainMoments, PackedMoments, pack_upper, packed_length, unpack_upper
from distunlearn.udfs.moments import MomentsAccumulator, merge_moments, partial_rows


def _batch(x: np.ndarray, domain: int) -> pa.RecordBatch:
    n = len(x)
    return pa.RecordBatch.from_arrays([pa.array(np.arange(n)), pa.array(np.full(n, domain, np.int32)),
                                       pa.array(list(x), pa.list_(pa.float64()))], names=["id", "domain", "vec"])


def _merged(batches) -> MomentsAccumulator:
    acc = MomentsAccumulator()
    for batch in merge_moments(iter(batches)):
        assert set(batch.column("raw_rows").to_pylist()) == {0}   # a merge task sends moments, never rows
        for row in partial_rows(batch):
            acc.add_row(row)
    return acc


def test_packing_round_trip_and_in_place_merge():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 7)), rng.normal(size=(30, 7)) + 3
    m = DomainMoments.from_rows(a).merge(DomainMoments.from_rows(b))
    assert len(pack_upper(m.m2)) == packed_length(7) == 28
    np.testing.assert_array_equal(unpack_upper(pack_upper(m.m2), 7), m.m2)
    packed = PackedMoments.of(DomainMoments.from_rows(a))
    part = DomainMoments.from_rows(b)
    packed.merge(part.n, part.mean, pack_upper(part.m2))
    np.testing.assert_allclose(packed.unpacked().m2, m.m2, rtol=1e-14)
    assert packed.n == 80


def test_partitions_with_few_rows_send_rows_and_merge_exactly():
    """Partitions holding fewer rows of a domain than half the dimension send those rows (smaller than a
    d^2 triangle); mixed with full partials the merge equals the moments of all rows."""
    rng = np.random.default_rng(1)
    dim, partials, rows = 16, [], {1: [], 2: []}
    for k in (3, 5, 20, 1, 7, 40):
        acc = MomentsAccumulator()
        for domain in (1, 2):
            x = rng.normal(size=(k, dim)) + 100 * domain
            acc.add_batch(_batch(x, domain))
            rows[domain].append(x)
        batch = acc.to_batch()
        raw = dict(zip(batch.column("domain").to_pylist(), batch.column("raw_rows").to_pylist()))
        assert raw == {0: 0, 1: k if k <= dim // 2 else 0, 2: k if k <= dim // 2 else 0}
        partials.append(batch)
    in_order = _merged(partials)
    direct = MomentsAccumulator()   # the driver's own merge, rows before and after a triangle
    for batch in (partials[1], partials[0], partials[2]):
        for row in partial_rows(batch):
            direct.add_row(row)
    for merged, upto in ((in_order, 6), (direct, 3)):
        for domain in (1, 2):
            expected = DomainMoments.from_rows(np.concatenate(rows[domain][:upto]))
            got = merged.domain(domain, dim)
            assert got.n == expected.n == (76 if upto == 6 else 28)
            np.testing.assert_allclose(got.mean, expected.mean, rtol=1e-14)
            np.testing.assert_allclose(got.m2, expected.m2, rtol=1e-10, atol=1e-9)


def test_merge_memory_does_not_grow_with_the_number_of_partials():
    """A merge task reading partials one Arrow batch at a time holds the merged moments, one batch and one
    partial: its peak is the same for 4 and for 40 partials, a small multiple of one partial."""
    dim = 256
    rng = np.random.default_rng(2)
    template = MomentsAccumulator()
    template.add_batch(_batch(rng.normal(size=(400, dim)), 2))
    partial = template.to_batch()
    partial_bytes = 8 * (packed_length(dim) + dim)

    def peak(count: int) -> int:
        tracemalloc.start()
        _merged(partial for _ in range(count))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(4), peak(40)
    assert large < 1.2 * small and large < 6 * partial_bytes
