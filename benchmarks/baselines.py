"""What the job is compared with: plain Spark scans of the vector column, and the same algorithm in one
Python process on the same Parquet files (the checked numpy run and the lean one)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from data import table_files
from measure import peak_rss_mib

LEAN_BLOCK_ROWS = 262_144  # rows per block of the lean run's retained moments (bounds its float64 copies)


def count_values(batches):
    """mapInArrow: the vector column reaches Python and is only counted."""
    import pyarrow as pa

    n = 0
    for batch in batches:
        n += len(batch.column(0).flatten())
    yield pa.RecordBatch.from_arrays([pa.array([n], pa.int64())], names=["n"])


def spark_scans(df) -> dict:
    """The plain scans of the vector column: JVM decode and count, a higher-order sum, and Arrow to Python."""
    import sys

    from pyspark import cloudpickle
    from pyspark.sql import functions as F

    # executors cannot import this module (it is on no path of theirs): ship count_values by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    element_sum = F.aggregate("embedding", F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double"))
    return {
        "scan_size": lambda: {"values": df.select(F.sum(F.size("embedding")).alias("n")).first()["n"]},
        "scan_aggregate": lambda: {"sum": df.select(F.sum(element_sum).alias("s")).first()["s"]},
        "scan_arrow_count": lambda: {"values": df.select("embedding").mapInArrow(count_values, "n long")
                                     .agg(F.sum("n").alias("n")).first()["n"]},
    }


def lean_numpy_worker(args) -> None:
    """likelihood_ratio without input checks: read the id, topic and vector columns of the live files
    with pyarrow, moments of both domains, the pooled model, scores, sort and the exact budget scan."""
    t_import = time.perf_counter()
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from distunlearn.core.gaussian import PooledGaussian
    from distunlearn.core.moments import DomainMoments, merge_all
    from distunlearn.core.rules import score_rows
    from distunlearn.core.selection import EditedKL, Thresholds, select_smallest_budget
    from distunlearn.synthetic import UNWANTED_TOPIC

    import_seconds = time.perf_counter() - t_import
    timings: dict[str, float] = {}
    start = t = time.perf_counter()
    table = pq.read_table(table_files(args.table), columns=["id", "topic", "embedding"])
    vec = table.column("embedding").combine_chunks()
    dim = len(vec[0])
    x = vec.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    ids = table.column("id").to_numpy()
    unwanted = pc.equal(table.column("topic"), UNWANTED_TOPIC).to_numpy(zero_copy_only=False)
    timings["read files + flatten (pyarrow)"] = time.perf_counter() - t

    t = time.perf_counter()
    x1, ids1 = x[unwanted].astype(np.float64), ids[unwanted]
    retained = np.flatnonzero(~unwanted)
    m2 = merge_all(DomainMoments.from_rows(x[retained[i:i + LEAN_BLOCK_ROWS]])
                   for i in range(0, len(retained), LEAN_BLOCK_ROWS))
    model = PooledGaussian.fit(DomainMoments.from_rows(x1), m2, 1e-6)
    kl = EditedKL.from_model(model)
    thresholds = Thresholds.resolve(kl, alpha_rel=0.5, epsilon_rel=1.0)
    timings["moments + model"] = time.perf_counter() - t

    t = time.perf_counter()
    y = model.whiten(x1)
    choice, _ = select_smallest_budget("likelihood_ratio", model, thresholds, y,
                                       score_rows("likelihood_ratio", model, x1, y), ids1)
    timings["whiten + score + sort + budget scan"] = time.perf_counter() - t
    out = {"seconds": round(time.perf_counter() - start, 2), "import_seconds": round(import_seconds, 2),
           "phases": {k: round(v, 3) for k, v in timings.items()}, "peak_rss_mib": peak_rss_mib(),
           "n_unwanted": model.n1, "n_retained": model.n2, "dims": model.dim, "rule": "likelihood_ratio",
           "rules": {"likelihood_ratio": choice.deleted}, "deleted": choice.deleted}
    Path(args.json).write_text(json.dumps(out, indent=1))


def numpy_worker(args) -> None:
    """The job's algorithm in one process on the table's live Parquet files (pyarrow + numpy)."""
    t_import = time.perf_counter()
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from distunlearn.core.gaussian import PooledGaussian
    from distunlearn.core.moments import DomainMoments
    from distunlearn.core.rules import RULES, score_rows
    from distunlearn.core.selection import EditedKL, Thresholds, select_smallest_budget
    from distunlearn.synthetic import UNWANTED_TOPIC
    from distunlearn.udfs.vectors import to_matrix

    import_seconds = time.perf_counter() - t_import
    rules = RULES if args.rule == "auto" else (args.rule,)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    t = time.perf_counter()
    files = table_files(args.table)
    timings["list live files (deltalake)"] = time.perf_counter() - t

    # pass 1: moments per domain, input checks; the unwanted rows (as float32) and ids are kept
    t = time.perf_counter()
    moments = {1: None, 2: None}
    unwanted_x, unwanted_ids, all_ids = [], [], []
    nonfinite = 0
    dim = None
    for path in files:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=65_536, columns=["id", "topic", "embedding"]):
            vec = batch.column("embedding")
            if dim is None:
                dim = int(vec.value_lengths()[0].as_py())
            lengths = vec.value_lengths().to_numpy(zero_copy_only=False)
            if (lengths != dim).any() or vec.null_count:
                raise SystemExit("ragged or null vectors")
            x = to_matrix(vec, dim)
            finite = np.isfinite(x).all(axis=1)
            nonfinite += int((~finite).sum())
            ids = batch.column("id").to_numpy(zero_copy_only=False)
            is_unwanted = pc.fill_null(pc.equal(batch.column("topic"), UNWANTED_TOPIC), False) \
                .to_numpy(zero_copy_only=False)
            all_ids.append(ids)
            for label, mask in ((1, is_unwanted), (2, ~is_unwanted)):
                part = DomainMoments.from_rows(x[mask])
                moments[label] = part if moments[label] is None else moments[label].merge(part)
            unwanted_x.append(x[is_unwanted].astype(np.float32))
            unwanted_ids.append(ids[is_unwanted])
    if nonfinite:
        raise SystemExit("non-finite values")
    timings["read + moments (pass over the files)"] = time.perf_counter() - t

    t = time.perf_counter()
    ids = np.concatenate(all_ids)
    duplicates = int(len(ids) - len(np.unique(ids)))
    del all_ids, ids
    if duplicates:
        raise SystemExit("duplicate ids")
    timings["duplicate-id check"] = time.perf_counter() - t

    t = time.perf_counter()
    model = PooledGaussian.fit(moments[1], moments[2], 1e-6)
    kl = EditedKL.from_model(model)
    thresholds = Thresholds.resolve(kl, alpha_rel=0.5, epsilon_rel=1.0)
    timings["model + thresholds"] = time.perf_counter() - t

    t = time.perf_counter()
    x1 = np.concatenate(unwanted_x).astype(np.float64)
    ids1 = np.concatenate(unwanted_ids)
    del unwanted_x, unwanted_ids
    y = model.whiten(x1)
    keys = None
    if "random" in rules:
        keys = _xxhash64_keys(args.seed, ids1)
    scores = {rule: score_rows(rule, model, x1, y, keys) for rule in rules}
    timings["whiten + score"] = time.perf_counter() - t

    t = time.perf_counter()
    choices = {}
    for rule in rules:
        choice, _ = select_smallest_budget(rule, model, thresholds, y, scores[rule], ids1)
        choices[rule] = choice.deleted
    timings["sort + prefix sums + smallest f"] = time.perf_counter() - t
    total = time.perf_counter() - start
    feasible = {r: d for r, d in choices.items() if d is not None}
    best = min(feasible, key=lambda r: (feasible[r], rules.index(r))) if feasible else None
    out = {"seconds": round(total, 2), "import_seconds": round(import_seconds, 2),
           "phases": {k: round(v, 3) for k, v in timings.items()},
           "peak_rss_mib": peak_rss_mib(),
           "files": len(files), "n_unwanted": model.n1, "n_retained": model.n2, "dims": model.dim,
           "kappa": kl.kappa, "alpha": thresholds.alpha, "epsilon": thresholds.epsilon,
           "rules": choices, "rule": best, "deleted": feasible.get(best) if best else None,
           "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    Path(args.json).write_text(json.dumps(out, indent=1))


def _xxhash64_keys(seed: int, ids):
    """The random rule's keys, Spark's xxhash64(seed, id) as double, computed without Spark is out of
    scope here: the numpy run uses a seeded permutation instead (same distribution, not the same rows)."""
    import numpy as np

    return np.random.default_rng(seed).permutation(len(ids)).astype(np.float64)

