"""Downstream check: retrain a ``pyspark.ml`` classifier (MLlib logistic regression by default) on edited
training rows and score it on a held-out split.

Fits are cheap enough to make tens of them: the training rows are repartitioned once by id into one
partition per ``FIT_PARTITION_BYTES`` of vectors (by the data's size, not the cluster's: small data takes
few, since a fit on it is mostly per-task overhead, and large data as many as it needs) and cached; each
order's ranks join those partitions by id. An edit is a weight column on the cached rows (deleted rows
weigh 0) for the classifiers whose loss is a weighted sum over rows (``WEIGHTED``), a filter for every
other; several budgets are fitted at once from threads, so their Spark jobs share the cluster.
"""
from __future__ import annotations

import importlib
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from distunlearn.core.budget_search import Fit
from distunlearn.errors import DistunlearnError, ParameterError
from distunlearn.spark.keys import SHUFFLE_JOIN
from distunlearn.spark.source import RETAINED, UNWANTED

SPLIT_BUCKETS = 10_000
#: Fits running at once (each one a sequence of small Spark jobs; on small data they leave slots idle).
FITS_AT_ONCE = 8
#: Training rows per cached partition, as float64 bytes: small data takes one partition.
FIT_PARTITION_BYTES = 32 * 1024 * 1024
#: Classifiers whose loss is a weighted sum over rows, so a 0-weight row is a deleted row. Others (trees,
#: forests, boosting) still see 0-weight rows in split candidates, counts and bootstrap draws: they get filters.
WEIGHTED = ("LogisticRegression", "LinearSVC")
METRIC = "accuracy on the held-out rows of each domain (the forgotten class's recall when it is one class)"
#: A string label with more distinct values than this is refused (the label vocabulary reaches the driver).
MAX_LABELS = 10_000


@dataclass(frozen=True)
class Classifier:
    """A ``pyspark.ml`` classifier by class name (``LogisticRegression`` or a dotted path) and its params."""

    name: str = "LogisticRegression"
    params: dict = field(default_factory=dict)

    def estimator(self):
        """A new estimator with the params set; a bad name or param fails here with one line."""
        module, _, cls = self.name.rpartition(".")
        try:
            estimator = getattr(importlib.import_module(module or "pyspark.ml.classification"), cls)()
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            raise DistunlearnError(f"classifier {self.name!r} is not a pyspark.ml classifier: {exc}") from None
        for key, value in self.params.items():
            if not estimator.hasParam(key):
                raise DistunlearnError(f"classifier {self.name} has no param {key!r}")
            estimator.set(estimator.getParam(key), value)
        if not estimator.hasParam("featuresCol") or not estimator.hasParam("labelCol"):
            raise DistunlearnError(f"classifier {self.name!r} is not a pyspark.ml classifier (no featuresCol/labelCol)")
        return estimator

    @property
    def weighted(self) -> bool:
        """Whether an edit can be a 0/1 row weight instead of a filter (``WEIGHTED``)."""
        module, _, cls = self.name.rpartition(".")
        return cls in WEIGHTED and module in ("", "pyspark.ml.classification")

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"pyspark.ml {self.name}({params})"


def split_by_id(labelled: DataFrame, test_fraction: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """(train, test) by a seeded hash of the id: the same rows land in the test split on every run."""
    bucket = F.pmod(F.xxhash64(F.lit(f"distunlearn-split-{seed}"), F.col("id")), F.lit(SPLIT_BUCKETS))
    is_test = bucket < F.lit(int(round(test_fraction * SPLIT_BUCKETS)))
    return labelled.where(~is_test), labelled.where(is_test)


def fit_partitions(rows: int, dim: int) -> int:
    """Partitions of the cached labelled rows: one per ``FIT_PARTITION_BYTES`` of their vectors."""
    return max(1, math.ceil(rows * dim * 8 / FIT_PARTITION_BYTES))


class Downstream:
    """A held-out test split and a training split; ``fit`` retrains on edited training sets.

    The metrics are accuracies on the test rows of each domain. When the unwanted domain is a single
    class (spam, one image class) its accuracy is that class's recall. A string label is indexed as
    ``StringIndexer`` does (most frequent first, ties alphabetical), over both splits.
    """

    def __init__(self, labelled: DataFrame, test_fraction: float, seed: int, classifier: Classifier,
                 partitions: int):
        from pyspark.ml.functions import array_to_vector

        self.classifier = classifier
        self.weighted = classifier.weighted
        self.partitions = partitions
        labelled = labelled.where(F.col("label").isNotNull())
        self.labels = None
        if dict(labelled.dtypes)["label"] == "string":
            labelled, self.labels = _indexed(labelled)
        features = labelled.select("id", "domain", F.col("label").cast("double").alias("label"),
                                   array_to_vector("vec").alias("features"))
        train, test = split_by_id(features, test_fraction, seed)
        self.train = train.repartition(partitions, "id").cache()
        self.test = test.repartition(max(1, math.ceil(partitions * test_fraction)), "id").cache()
        counts = {r["domain"]: r["count"] for r in self.test.groupBy("domain").count().collect()}
        self.test_rows = {"unwanted": counts.get(UNWANTED, 0), "retained": counts.get(RETAINED, 0)}
        if not self.test_rows["unwanted"] or not self.test_rows["retained"]:
            raise ParameterError(f"the test split holds {self.test_rows['unwanted']} unwanted and "
                                 f"{self.test_rows['retained']} retained rows with a label: both domains need "
                                 "test rows (raise {test_fraction})", "test_fraction")

    def with_ranks(self, ranks: DataFrame) -> DataFrame:
        """Training rows with the deletion rank (1 = deleted first) of the unwanted ones, null for others;
        cached and computed once. The ranks are hashed by id into the training split's partitions, which
        the join keeps (the cached split is not shuffled again)."""
        ranks = ranks.select("id", "rank").repartition(self.partitions, "id")
        ranked = self.train.join(ranks.hint(SHUFFLE_JOIN), "id", "left").cache()
        ranked.count()
        return ranked

    def fit(self, ranked: DataFrame, budgets: list[int]) -> list[Fit]:
        """Retrain without the first ``budget`` rows of the order, for each budget (``FITS_AT_ONCE`` at a time)."""
        with ThreadPoolExecutor(max_workers=min(FITS_AT_ONCE, max(len(budgets), 1))) as pool:
            return list(pool.map(lambda b: self._fit_one(ranked, b), budgets))

    def train_model(self, ranked: DataFrame, kept: Column):
        """The classifier fitted on the rows of ``ranked`` where ``kept`` holds (a 0/1 weight or a filter)."""
        estimator = self.classifier.estimator()
        if self.weighted:
            estimator.set(estimator.getParam("weightCol"), "weight")
            return estimator.fit(ranked.withColumn("weight", kept.cast("double")))
        return estimator.fit(ranked.where(kept))

    def _fit_one(self, ranked: DataFrame, budget: int) -> Fit:
        start = time.perf_counter()
        model = self.train_model(ranked, F.col("rank").isNull() | (F.col("rank") > budget))
        hits = model.transform(self.test).groupBy("domain") \
            .agg(F.avg((F.col("prediction") == F.col("label")).cast("double")).alias("accuracy")).collect()
        accuracy = {r["domain"]: r["accuracy"] for r in hits}
        return Fit(budget, accuracy[UNWANTED], accuracy[RETAINED], time.perf_counter() - start)

    def describe(self, label_col: str, test_fraction: float) -> dict:
        """The setup as the reports give it: classifier, label, labels of a string label, held-out rows, metric."""
        return {"classifier": self.classifier.describe(), "label_col": label_col, "labels": self.labels,
                "test_fraction": test_fraction, "test_rows": self.test_rows, "metric": METRIC}

    def release(self) -> None:
        self.train.unpersist()
        self.test.unpersist()


def _indexed(labelled: DataFrame) -> tuple[DataFrame, list[str]]:
    """String labels as indices 0, 1, ... by descending frequency, ties alphabetical (``StringIndexer``'s
    ``frequencyDesc``); the labels in index order."""
    counts = labelled.groupBy("label").count().orderBy(F.col("count").desc(), F.col("label")).limit(MAX_LABELS + 1)
    labels = [r["label"] for r in counts.collect()]
    if len(labels) > MAX_LABELS:
        raise DistunlearnError(f"the label column has more than {MAX_LABELS:,} distinct values: not a class label")
    index = F.create_map(*[F.lit(x) for pair in ((label, i) for i, label in enumerate(labels)) for x in pair])
    return labelled.withColumn("label", index[F.col("label")]), labels
