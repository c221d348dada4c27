"""Downstream check: retrain a Spark MLlib logistic regression on edited training rows and score it."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from distunlearn.spark.keys import SHUFFLE_JOIN
from distunlearn.spark.source import RETAINED, UNWANTED

SPLIT_BUCKETS = 10_000


def split_by_id(labelled: DataFrame, test_fraction: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """(train, test) by a seeded hash of the id: the same rows land in the test split on every run."""
    bucket = F.pmod(F.xxhash64(F.lit(f"distunlearn-split-{seed}"), F.col("id")), F.lit(SPLIT_BUCKETS))
    is_test = bucket < F.lit(int(round(test_fraction * SPLIT_BUCKETS)))
    return labelled.where(~is_test), labelled.where(is_test)


class Downstream:
    """A held-out test split and a training split; ``score`` retrains on an edited training set.

    The metrics are accuracies on the test rows of each domain. When the unwanted domain is a
    single class (spam, one image class) its accuracy is that class's recall.
    """

    def __init__(self, train: DataFrame, test: DataFrame, max_iter: int, reg_param: float):
        from pyspark.ml.functions import array_to_vector

        def features(df: DataFrame) -> DataFrame:
            return df.where(F.col("label").isNotNull()) \
                .select("id", "domain", "label", array_to_vector("vec").alias("features"))

        self.train = features(train).cache()
        self.test = features(test).cache()
        self.max_iter, self.reg_param = max_iter, reg_param
        counts = {r["domain"]: r["count"] for r in self.test.groupBy("domain").count().collect()}
        self.test_rows = {"unwanted": counts.get(UNWANTED, 0), "retained": counts.get(RETAINED, 0)}

    def with_ranks(self, ranks: DataFrame) -> DataFrame:
        """Training rows with the deletion rank (1 = deleted first) of the unwanted ones, null for others."""
        return self.train.join(ranks.select("id", "rank").hint(SHUFFLE_JOIN), "id", "left").cache()

    def score(self, training: DataFrame) -> dict:
        """Fit on ``training`` and return the forget-domain and retained-domain test accuracies."""
        from pyspark.ml.classification import LogisticRegression

        model = LogisticRegression(maxIter=self.max_iter, regParam=self.reg_param).fit(training)
        hits = model.transform(self.test).groupBy("domain") \
            .agg(F.avg((F.col("prediction") == F.col("label")).cast("double")).alias("accuracy")).collect()
        accuracy = {r["domain"]: r["accuracy"] for r in hits}
        return {"forget_accuracy": accuracy.get(UNWANTED), "retained_accuracy": accuracy.get(RETAINED)}

    @staticmethod
    def edited(ranked: DataFrame, budget: int) -> DataFrame:
        """The training rows left after deleting the first ``budget`` unwanted rows of a rule's order."""
        return ranked.where(F.col("rank").isNull() | (F.col("rank") > budget))
