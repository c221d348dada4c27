"""Per-partition domain moments and input checks, and their pairwise merge.

A partial is one row per domain: the count, the mean and the packed upper triangle of the scatter matrix
as little-endian float64 bytes (``binary`` columns, no Python lists), plus one row of input counters. A
partition with fewer rows of a domain than half the dimension sends those rows instead (``raw_rows`` of
them, in ``m2``), which is smaller: many small files then cost their rows, not d^2 numbers each.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distunlearn.core.moments import DomainMoments, PackedMoments, pack_upper
from distunlearn.udfs.id_runs import IdRuns, variable_width
from distunlearn.udfs.vectors import list_lengths, to_matrix

SCHEMA = ("domain int, n long, mean binary, m2 binary, "
          "null_ids long, null_vectors long, nonfinite long, min_dim int, max_dim int, "
          "too_large long, largest double, example_id string, id_bytes int, raw_rows int, kept long")

# A value whose square (summed over rows) could overflow float64 moments: sqrt(max float64) is 1.3e154.
TOO_LARGE = 1e150

_NO_DIM_MIN, _NO_DIM_MAX = 2**31 - 1, -1


class MomentsAccumulator:
    """Moments per domain (1 unwanted, 2 retained) plus counters of bad input."""

    def __init__(self):
        self.moments: dict[int, PackedMoments] = {}
        self.raw: dict[int, list[np.ndarray]] = {}   # a domain's rows while they are fewer than dim / 2
        self.null_ids = self.null_vectors = self.nonfinite = self.too_large = 0
        self.min_dim, self.max_dim = _NO_DIM_MIN, _NO_DIM_MAX
        self.largest = 0.0
        self.example_id: str | None = None   # one row with a too-large value, to name in the error
        self.id_bytes = 0   # the longest string or binary id, in bytes (sizes a broadcast of deleted ids)
        self.kept = 0       # unwanted rows kept for scoring

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Add a batch of columns (id, domain, vec)."""
        self.null_ids += batch.column("id").null_count
        if variable_width(batch.column("id").type) and batch.num_rows:
            self.id_bytes = max(self.id_bytes, pc.max(pc.binary_length(batch.column("id"))).as_py() or 0)
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
        x = to_matrix(vectors, self.max_dim, dtype=None)   # float32 rows stay so until they are centred
        parts = {label: x if (domain == label).all() else x[domain == label] for label in (1, 2)
                 if (domain == label).any()}
        with np.errstate(all="ignore"):   # NaN, Inf or overflow show in the moments, then in the rows
            parts = {label: DomainMoments.from_rows(rows) if len(rows) > rows.shape[1] // 2 else rows
                     for label, rows in parts.items()}
        if not all(map(_surely_bounded, parts.values())) and self._rejects(x, ids):
            return
        for label, part in parts.items():
            if isinstance(part, DomainMoments):
                self._add_moments(label, part)
            else:
                self._add_rows(label, part)

    def _rejects(self, x: np.ndarray, ids: pa.Array) -> bool:
        """Count the rows with NaN, Inf or a value too large for float64 moments; whether there are any."""
        finite = np.isfinite(x).all(axis=1)
        self.nonfinite += int((~finite).sum())
        if not finite.all():
            return True
        peak = np.abs(x).max(axis=1)
        large = peak > TOO_LARGE
        if large.any():
            self.too_large += int(large.sum())
            self.largest = max(self.largest, float(peak.max()))
            if self.example_id is None:
                self.example_id = str(ids[int(np.flatnonzero(large)[0])].as_py())
            return True
        return False

    def _add_rows(self, label: int, rows: np.ndarray) -> None:
        """Keep a domain's rows while they are fewer than half the dimension, else merge them as moments."""
        if label not in self.moments and sum(map(len, self.raw.get(label, []))) + len(rows) <= rows.shape[1] // 2:
            self.raw.setdefault(label, []).append(rows)
            return
        if label in self.raw:
            rows = np.concatenate([*self.raw.pop(label), rows])
        self._add_moments(label, DomainMoments.from_rows(rows))

    def _add_moments(self, label: int, part: DomainMoments) -> None:
        if label in self.raw:
            part = DomainMoments.from_rows(np.concatenate(self.raw.pop(label))).merge(part)
        self._merge(label, part.n, part.mean, pack_upper(part.m2))

    def _merge(self, label: int, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        if label in self.moments:
            self.moments[label].merge(n, mean, m2)
        else:
            self.moments[label] = PackedMoments(n, mean.copy(), m2.copy())

    def add_row(self, row: dict) -> None:
        self.null_ids += row["null_ids"]
        self.null_vectors += row["null_vectors"]
        self.nonfinite += row["nonfinite"]
        self.too_large += row["too_large"]
        self.largest = max(self.largest, row["largest"])
        self.example_id = self.example_id or row["example_id"]
        self.id_bytes = max(self.id_bytes, row["id_bytes"])
        self.kept += row["kept"]
        self.min_dim, self.max_dim = min(self.min_dim, row["min_dim"]), max(self.max_dim, row["max_dim"])
        label = row["domain"]
        if label <= 0:
            return
        mean = np.frombuffer(row["mean"], dtype="<f8")
        known = {m.dim for m in self.moments.values()} | {parts[0].shape[1] for parts in self.raw.values()}
        if known and len(mean) not in known:  # partitions of different lengths: ragged input
            self.min_dim, self.max_dim = min(self.min_dim, len(mean), *known), max(self.max_dim, len(mean), *known)
        elif row["raw_rows"]:
            rows = np.frombuffer(row["m2"], dtype="<f8").reshape(row["raw_rows"], len(mean))
            self._add_rows(label, rows.copy())   # not a view that would keep the whole Arrow batch alive
        else:
            self._merge(label, row["n"], mean, np.frombuffer(row["m2"], dtype="<f8"))

    def domain(self, label: int, dim: int) -> DomainMoments:
        """The merged moments of domain ``label`` (1 unwanted, 2 retained), empty when no row was seen."""
        if label in self.raw:   # rows kept so far join whatever moments came as triangles
            part = DomainMoments.from_rows(np.concatenate(self.raw.pop(label)))
            self._merge(label, part.n, part.mean, pack_upper(part.m2))
        return self.moments[label].unpacked() if label in self.moments else DomainMoments.empty(dim)

    def to_batch(self, packed_only: bool = False) -> pa.RecordBatch:
        """The partial: counters, then per domain its triangle or (unless ``packed_only``) its kept rows."""
        if packed_only:
            for label in list(self.raw):
                self.domain(label, 0)
        neutral = dict(null_ids=0, null_vectors=0, nonfinite=0, min_dim=_NO_DIM_MIN, max_dim=_NO_DIM_MAX,
                       too_large=0, largest=0.0, example_id=None, id_bytes=0, raw_rows=0, kept=0)
        rows = [dict(domain=0, n=0, mean=b"", m2=b"", null_ids=int(self.null_ids), null_vectors=self.null_vectors,
                     nonfinite=self.nonfinite, min_dim=self.min_dim, max_dim=self.max_dim,
                     too_large=self.too_large, largest=self.largest, example_id=self.example_id,
                     id_bytes=self.id_bytes, raw_rows=0, kept=self.kept)]
        rows += [dict(domain=label, n=m.n, mean=m.mean.astype("<f8").tobytes(), m2=m.m2.astype("<f8").tobytes(),
                      **neutral)
                 for label, m in sorted(self.moments.items())]
        for label, parts in sorted(self.raw.items()):
            x = np.concatenate(parts).astype("<f8")
            rows.append(dict(neutral, domain=label, n=len(x), mean=x.mean(axis=0).tobytes(), m2=x.tobytes(),
                             raw_rows=len(x)))
        return pa.RecordBatch.from_pylist(rows, schema=_arrow_schema())


def _arrow_schema() -> pa.Schema:
    return pa.schema([("domain", pa.int32()), ("n", pa.int64()), ("mean", pa.binary()), ("m2", pa.binary()),
                      ("null_ids", pa.int64()), ("null_vectors", pa.int64()),
                      ("nonfinite", pa.int64()), ("min_dim", pa.int32()), ("max_dim", pa.int32()),
                      ("too_large", pa.int64()), ("largest", pa.float64()), ("example_id", pa.string()),
                      ("id_bytes", pa.int32()), ("raw_rows", pa.int32()), ("kept", pa.int64())])


def _surely_bounded(part: "DomainMoments | np.ndarray") -> bool:
    """Whether every value behind these moments (or rows) is finite and at most ``TOO_LARGE``, told from the
    moments alone: |x - mean| <= sqrt(m2's diagonal) in every coordinate. False means: look at the rows."""
    if isinstance(part, np.ndarray):
        return bool(np.isfinite(part).all() and float(np.abs(part).max()) <= TOO_LARGE)
    if not (np.isfinite(part.mean).all() and np.isfinite(part.m2).all()):
        return False
    reach = np.abs(part.mean) + np.sqrt(np.maximum(np.diag(part.m2), 0.0))
    return bool(reach.max() <= TOO_LARGE * (1 - 1e-9))   # margin for the rounding of m2


# The kinds of row a scan emits.
PARTIAL, KEPT, ID_RUN, IDS_UNORDERED = 0, 1, 2, 3


def domain_scan(id_type: pa.DataType, vec_type: pa.DataType, keep_unwanted: bool):
    """mapInArrow: columns (id, domain, vec, requested) -> ``kind int, id, id_to, vec`` + ``SCHEMA``.

    With ``keep_unwanted``, the unwanted rows not requested pass through as they are read (kind ``KEPT``:
    id and vec set, counted in ``kept``); then come the partition's moments and counters (kind
    ``PARTIAL``: the ``SCHEMA`` columns set), one row per domain seen plus a counters row, and its runs of
    strictly increasing ids (kind ``ID_RUN``: first id in ``id``, last in ``id_to``; or one row of kind
    ``IDS_UNORDERED``, see ``IdRuns``). One read of the source thus yields the model's statistics, the
    proof that ids are unique when the table is written in id order, and the rows to score.
    """
    moments_schema = _arrow_schema()
    names = ["kind", "id", "id_to", "vec", *moments_schema.names]

    def rows_of(kind: int, ids: pa.Array, ids_to: pa.Array, vectors: pa.Array, moments: list) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays([pa.array(np.full(len(ids), kind, np.int32)), ids, ids_to, vectors,
                                           *moments], names=names)

    def scan(batches):
        acc, runs = MomentsAccumulator(), IdRuns(id_type)
        for batch in batches:
            acc.add_batch(batch)
            runs.add(batch.column("id"))
            if keep_unwanted:
                keep = pc.and_(pc.equal(batch.column("domain"), 1), pc.invert(batch.column("requested")))
                rows = batch.filter(keep)
                if rows.num_rows:
                    n = rows.num_rows
                    acc.kept += n
                    yield rows_of(KEPT, rows.column("id"), pa.nulls(n, id_type), rows.column("vec"),
                                  [pa.nulls(n, f.type) for f in moments_schema])
        summary = acc.to_batch()
        n = summary.num_rows
        yield rows_of(PARTIAL, pa.nulls(n, id_type), pa.nulls(n, id_type), pa.nulls(n, vec_type), summary.columns)
        bounds = runs.runs if runs.runs is not None else [[None, None]]
        n = len(bounds)
        if n:
            yield rows_of(ID_RUN if runs.runs is not None else IDS_UNORDERED,
                          pa.array([b[0] for b in bounds], id_type), pa.array([b[1] for b in bounds], id_type),
                          pa.nulls(n, vec_type), [pa.nulls(n, f.type) for f in moments_schema])

    return scan


def partial_rows(batch: pa.RecordBatch):
    """The rows of a batch of ``SCHEMA`` one at a time, binary columns as zero-copy buffers."""
    columns = [(name, batch.column(name), pa.types.is_binary(batch.schema.field(name).type))
               for name in batch.schema.names]
    for i in range(batch.num_rows):
        yield {name: column[i].as_buffer() if binary else column[i].as_py() for name, column, binary in columns}


def merge_moments(batches):
    """mapInArrow: rows of ``SCHEMA`` -> their merge, in the same schema. Holds the merged moments and one
    Arrow batch at a time, however many partials the task reads. Its output holds no rows, only moments."""
    acc = MomentsAccumulator()
    for batch in batches:
        for row in partial_rows(batch):
            acc.add_row(row)
    yield acc.to_batch(packed_only=True)
