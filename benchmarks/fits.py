"""Time per downstream fit: the job's fits against one-at-a-time fits on filtered rows, in the same run.

```bash
.venv/bin/python benchmarks/fits.py --out docs/benchmarks     # about 10 minutes on 2 cores
```

Baseline (what ``evaluate --objective downstream`` did before): the training split cached in the source's partitions,
each edit a filter, one ``LogisticRegression`` fit after the other. The job (``spark.downstream.Downstream``):
the split cached in ``fit_partitions`` partitions, each edit a 0/1 weight column, ``FITS_AT_ONCE`` fits at a
time. Both fit the same budgets of the same order on the same rows; the forget-domain accuracies must agree.
Writes ``<out>/fits.json`` and ``<out>/fits.md``.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from common import REPO, log  # noqa: F401 - puts the repository on sys.path

# (name, rows, dims, classes): the 57-column spam table, SMS spam's embeddings, Fashion-MNIST's PCA
SHAPES = (("4,601 x 57, 2 classes", 4601, 57, 2), ("5,574 x 384, 2 classes", 5574, 384, 2),
          ("70,000 x 64, 10 classes", 70000, 64, 10))
SOURCE_PARTITIONS = 8
BUDGETS = 8
TARGET = 0.25   # the job's seconds per fit, at most this share of the baseline's


def table(spark, rows: int, dims: int, classes: int, seed: int = 0):
    """Labelled rows (id, domain, label, vec): class means apart, class 0 unwanted, the rest retained."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    label = rng.integers(0, classes, rows)
    x = rng.standard_normal((rows, dims)) + 1.2 * np.eye(classes, dims)[label]
    vec = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dims).cast(pa.list_(pa.float64()))
    rows_table = pa.table({"id": np.arange(rows), "domain": np.where(label == 0, 1, 2).astype(np.int32),
                           "label": label.astype(float), "vec": vec})
    return spark.createDataFrame(rows_table).repartition(SOURCE_PARTITIONS)


def baseline(train, test, ranks, budgets, classifier) -> tuple[float, list[float]]:
    from pyspark.sql import functions as F

    ranked = train.join(ranks, "id", "left").cache()
    ranked.count()
    start, forget = time.perf_counter(), []
    for b in budgets:
        model = classifier.estimator().fit(ranked.where(F.col("rank").isNull() | (F.col("rank") > b)))
        hits = model.transform(test).where("domain = 1").agg(F.avg((F.col("prediction") == F.col("label"))
                                                                   .cast("double"))).first()[0]
        forget.append(hits)
    ranked.unpersist()
    return (time.perf_counter() - start) / len(budgets), forget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/benchmarks")
    args = parser.parse_args()
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    from distunlearn.spark.downstream import FITS_AT_ONCE, Classifier, Downstream, fit_partitions, split_by_id
    from distunlearn.spark.session import get_session

    spark = get_session("distunlearn-bench-fits", master="local[2]")
    classifier = Classifier("LogisticRegression", {"maxIter": 100, "regParam": 1e-4})
    results = []
    for name, rows, dims, classes in SHAPES:
        log(f"{name}: generating")
        labelled = table(spark, rows, dims, classes).cache()
        n1 = labelled.where("domain = 1").count()
        ranks = labelled.where("domain = 1").select(
            "id", F.row_number().over(Window.orderBy(F.xxhash64("id"))).alias("rank"))
        budgets = [int(round(k * n1 / (BUDGETS - 1))) for k in range(BUDGETS)]
        features = labelled.select("id", "domain", "label", array_to_vector("vec").alias("features"))
        train, test = (df.cache() for df in split_by_id(features, 0.2, 0))
        train.count(), test.count()
        log(f"{name}: baseline, {BUDGETS} fits one at a time")
        base_seconds, base_forget = baseline(train, test, ranks, budgets, classifier)
        train.unpersist(), test.unpersist()
        log(f"{name}: the job's fits")
        downstream = Downstream(labelled, 0.2, 0, classifier, fit_partitions(rows, dims))
        ranked = downstream.with_ranks(ranks)
        start = time.perf_counter()
        fits = downstream.fit(ranked, budgets)
        job_seconds = (time.perf_counter() - start) / len(budgets)
        ranked.unpersist(), downstream.release(), labelled.unpersist()
        agree = max(abs(a - f.forget) for a, f in zip(base_forget, fits))
        results.append({"shape": name, "rows": rows, "dims": dims, "classes": classes, "fits": len(budgets),
                        "partitions": downstream.partitions, "baseline_seconds_per_fit": base_seconds,
                        "job_seconds_per_fit": job_seconds, "ratio": job_seconds / base_seconds,
                        "forget_accuracy_largest_difference": agree})
        log(f"{name}: {base_seconds:.2f} s -> {job_seconds:.2f} s a fit ({job_seconds / base_seconds:.2f}x)")
    out = REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "fits.json").write_text(json.dumps({"target_ratio": TARGET, "results": results}, indent=1))
    lines = ["# Time per downstream fit (`benchmarks/fits.py`)", "",
             f"Same run, local[2]: {BUDGETS} logistic-regression fits (maxIter 100, regParam 1e-4) at budgets of one "
             f"order. Baseline: the split in the source's {SOURCE_PARTITIONS} partitions, a filter per edit, one fit "
             f"after the other. The job: `fit_partitions` partitions, a weight column, {FITS_AT_ONCE} fits at once. Target: "
             f"the job's time per fit <= {TARGET}x the baseline's.", "",
             "| table | partitions | baseline s/fit | job s/fit | ratio | target met | forget accuracy, largest "
             "difference |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['shape']} | {r['partitions']} | {r['baseline_seconds_per_fit']:.2f} | "
                     f"{r['job_seconds_per_fit']:.2f} | {r['ratio']:.2f}x | "
                     f"{'yes' if r['ratio'] <= TARGET else 'no'} | {r['forget_accuracy_largest_difference']:.4f} |")
    (out / "fits.md").write_text("\n".join(lines) + "\n")
    print(out / "fits.md")


if __name__ == "__main__":
    main()
