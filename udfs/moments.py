"""Per-partition domain moments and input checks, and their pairwise merge."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distunlearn.core.moments import DomainMoments
from distunlearn.udfs.vectors import list_lengths, to_matrix

SCHEMA = ("domain int, n long, mean array<double>, m2 array<double>, "
          "null_ids long, null_vectors long, nonfinite long, min_dim int, max_dim int, "
          "too_large long, largest double, example_id string")

# A value whose square (summed over rows) could overflow float64 moments: sqrt(max float64) is 1.3e154.
TOO_LARGE = 1e150

_NO_DIM_MIN, _NO_DIM_MAX = 2**31 - 1, -1


class MomentsAccumulator:
    """Moments per domain (1 unwanted, 2 retained) plus counters of bad input."""

    def __init__(self):
        self.moments: dict[int, DomainMoments] = {}
        self.null_ids = self.null_vectors = self.nonfinite = self.too_large = 0
        self.min_dim, self.max_dim = _NO_DIM_MIN, _NO_DIM_MAX
        self.largest = 0.0
        self.example_id: str | None = None   # one row with a too-large value, to name in the error

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Add a batch of columns (id, domain, vec)."""
        self.null_ids += batch.column("id").null_count
        domain = batch.column("domain").fill_null(0).to_numpy(zero_copy_only=False)
        vectors, ids = batch.column("vec"), batch.column("id")
        if not (domain > 0).all():
            picked = np.flatnonzero(domain > 0)
            if not len(picked):
                return
            picked = pa.array(picked)
            vectors, ids, domain = vectors.take(picked), ids.take(picked), domain[picked.to_numpy()]
        lengths = list_lengths(vectors)
        null_rows = lengths < 0
        self.null_vectors += int(null_rows.sum())
        if (~null_rows).any():
            self.min_dim = min(self.min_dim, int(lengths[~null_rows].min()))
            self.max_dim = max(self.max_dim, int(lengths[~null_rows].max()))
        if null_rows.any() or self.min_dim != self.max_dim or self.max_dim <= 0:
            return  # the driver rejects the input; no moments needed
        x = to_matrix(vectors, self.max_dim)
        finite = np.isfinite(x).all(axis=1)
        self.nonfinite += int((~finite).sum())
        if not finite.all():
            return
        peak = np.abs(x).max(axis=1)
        large = peak > TOO_LARGE
        if large.any():
            self.too_large += int(large.sum())
            self.largest = max(self.largest, float(peak.max()))
            if self.example_id is None:
                self.example_id = str(ids[int(np.flatnonzero(large)[0])].as_py())
            return
        for label in (1, 2):
            rows = x[domain == label]
            if len(rows):
                part = DomainMoments.from_rows(rows)
                self.moments[label] = self.moments[label].merge(part) if label in self.moments else part

    def add_row(self, row: dict) -> None:
        self.null_ids += row["null_ids"]
        self.null_vectors += row["null_vectors"]
        self.nonfinite += row["nonfinite"]
        self.too_large += row["too_large"]
        self.largest = max(self.largest, row["largest"])
        self.example_id = self.example_id or row["example_id"]
        self.min_dim, self.max_dim = min(self.min_dim, row["min_dim"]), max(self.max_dim, row["max_dim"])
        label = row["domain"]
        dim = len(row["mean"])
        known = {m.dim for m in self.moments.values()}
        if label > 0 and known and dim not in known:  # partitions of different lengths: ragged input
            self.min_dim, self.max_dim = min(self.min_dim, dim, *known), max(self.max_dim, dim, *known)
        elif label > 0:
            part = DomainMoments(row["n"], np.asarray(row["mean"]), np.asarray(row["m2"]).reshape(dim, dim))
            self.moments[label] = self.moments[label].merge(part) if label in self.moments else part

    def to_batch(self) -> pa.RecordBatch:
        neutral = dict(null_ids=0, null_vectors=0, nonfinite=0, min_dim=_NO_DIM_MIN, max_dim=_NO_DIM_MAX,
                       too_large=0, largest=0.0, example_id=None)
        rows = [dict(domain=0, n=0, mean=[], m2=[], null_ids=int(self.null_ids), null_vectors=self.null_vectors,
                     nonfinite=self.nonfinite, min_dim=self.min_dim, max_dim=self.max_dim,
                     too_large=self.too_large, largest=self.largest, example_id=self.example_id)]
        rows += [dict(domain=label, n=m.n, mean=m.mean.tolist(), m2=m.m2.ravel().tolist(), **neutral)
                 for label, m in sorted(self.moments.items())]
        return pa.RecordBatch.from_pylist(rows, schema=_arrow_schema())


def _arrow_schema() -> pa.Schema:
    return pa.schema([("domain", pa.int32()), ("n", pa.int64()), ("mean", pa.list_(pa.float64())),
                      ("m2", pa.list_(pa.float64())), ("null_ids", pa.int64()), ("null_vectors", pa.int64()),
                      ("nonfinite", pa.int64()), ("min_dim", pa.int32()), ("max_dim", pa.int32()),
                      ("too_large", pa.int64()), ("largest", pa.float64()), ("example_id", pa.string())])


def domain_scan(id_type: pa.DataType, vec_type: pa.DataType, keep_unwanted: bool):
    """mapInArrow: columns (id, domain, vec, requested) -> ``kind int, id, vec`` + ``SCHEMA``.

    With ``keep_unwanted``, the unwanted rows not requested pass through as they are read (kind 1: id
    and vec set); then come the partition's moments and counters (kind 0: the ``SCHEMA`` columns set),
    one row per domain seen plus a counters row. One read of the source thus yields both the model's
    statistics and the rows to score.
    """
    moments_schema = _arrow_schema()

    def scan(batches):
        acc = MomentsAccumulator()
        for batch in batches:
            acc.add_batch(batch)
            if keep_unwanted:
                keep = pc.and_(pc.equal(batch.column("domain"), 1), pc.invert(batch.column("requested")))
                rows = batch.filter(keep)
                if rows.num_rows:
                    n = rows.num_rows
                    yield pa.RecordBatch.from_arrays(
                        [pa.array(np.ones(n, np.int32)), rows.column("id"), rows.column("vec")]
                        + [pa.nulls(n, f.type) for f in moments_schema],
                        names=["kind", "id", "vec", *moments_schema.names])
        summary = acc.to_batch()
        n = summary.num_rows
        yield pa.RecordBatch.from_arrays([pa.array(np.zeros(n, np.int32)), pa.nulls(n, id_type),
                                          pa.nulls(n, vec_type), *summary.columns],
                                         names=["kind", "id", "vec", *moments_schema.names])

    return scan


def merge_moments(batches):
    """mapInArrow: rows of ``SCHEMA`` -> their merge, in the same schema."""
    acc = MomentsAccumulator()
    for batch in batches:
        for row in batch.to_pylist():
            acc.add_row(row)
    yield acc.to_batch()
