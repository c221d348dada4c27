"""One chunk scored and sorted inside its task: the order Spark would give, and a digest that later passes
must reproduce before they rank any row."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from distunlearn.core.gaussian import PooledGaussian
from distunlearn.core.moments import DomainMoments
from distunlearn.core.rules import score_rows
from distunlearn.core.selection import EditedKL, Thresholds, scan_chunk
from distunlearn.udfs.ordering import chunk_scanner, ordered_chunks, ranked_rows


def model_and_batches(seed: int = 0):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.standard_normal((40, 3)) + 0.5, rng.standard_normal((80, 3))
    x1[7] = x1[3]                                  # two rows with the same score: the smaller id goes first
    model = PooledGaussian.fit(DomainMoments.from_rows(x1), DomainMoments.from_rows(x2))
    ids = rng.permutation(1000)[:40]
    vec = pa.array([row.astype(np.float32).tolist() for row in x1], pa.list_(pa.float32()))
    batch = pa.RecordBatch.from_arrays([pa.array(ids, pa.int64()), vec, pa.array(np.zeros(40)),
                                        pa.array(np.zeros(40, np.int32))], names=["id", "vec", "random_key", "chunk"])
    return model, [batch.slice(0, 15), batch.slice(15)], ids, x1.astype(np.float32).astype(np.float64)


def test_a_chunk_sorted_in_its_task_follows_score_then_id():
    model, batches, ids, x = model_and_batches()
    (chunk, parts, digest), = ordered_chunks(iter(batches), model, "likelihood_ratio")
    scores = score_rows("likelihood_ratio", model, x, model.whiten(x))
    expected = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
    assert chunk == 0 and [i for b in parts for i in b.column("id").to_pylist()] == ids[expected].tolist()
    assert len(digest) == 64
    again = next(ordered_chunks(iter(batches[::-1]), model, "likelihood_ratio"))   # same rows, other batches
    assert again[2] == digest
    assert next(ordered_chunks(iter(batches), model, "mahalanobis_to_retained"))[2] != digest


def test_ranks_are_refused_in_an_order_other_than_the_chosen_one():
    model, batches, ids, _ = model_and_batches()
    digest = next(ordered_chunks(iter(batches), model, "likelihood_ratio"))[2]
    ranked = list(ranked_rows({0: 0}, 5, model, "likelihood_ratio", digest)(iter(batches)))
    assert pa.Table.from_batches(ranked).column("rank").to_pylist() == [1, 2, 3, 4, 5]
    with pytest.raises(RuntimeError, match="differs from the one its budget was chosen on"):
        list(ranked_rows({0: 0}, 5, model, "likelihood_ratio", "0" * 64)(iter(batches)))


def test_one_scan_of_several_rules_equals_each_rules_own_order():
    """``chunk_scanner`` with rules whitens the rows once and scans each rule's order: the same scan as
    scanning the rows sorted here by (-score, id), and the digest of that rule's ``ordered_chunks``."""
    model, batches, ids, x = model_and_batches()
    kl = EditedKL.from_model(model)
    thresholds = Thresholds.resolve(kl, alpha_rel=0.3, epsilon_rel=1.0)
    rules = ("likelihood_ratio", "ambiguous_first", "cosine_to_retained")
    before = {0: (2, np.full(3, 0.1))}
    scans = pa.Table.from_batches(list(chunk_scanner(kl, thresholds, before, model, rules)(iter(batches))))
    assert scans.column("rule").to_pylist() == list(rules) and scans.column("rows").to_pylist() == [40] * 3
    for row in scans.to_pylist():
        (_, _, digest), = ordered_chunks(iter(batches), model, row["rule"])
        scores = score_rows(row["rule"], model, x, model.whiten(x))
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
        own = scan_chunk([model.whiten(x[order])], kl, thresholds, *before[0])
        assert row["digest"] == digest
        assert row["first_feasible"] == own.first_feasible is not None
        assert row["best_alpha"] == pytest.approx(own.best_alpha, rel=1e-12)
