"""The ``retrain_margin`` rule's order: rounds of refitting the downstream classifier.

Round r (of R) fits the classifier on the training rows kept so far and deletes the next share of the
unwanted rows (the first ``round(m (r+1) / R)`` in all, of ``m`` labelled ones): those with the lowest
predicted probability of their own label, ties by id. Each round is one fit, one scoring pass over the
unwanted rows left and one top-k (k rows of (id, probability) in one task). The order is then a key per
row, ``2 (R - r) - p`` (round r's keys lie in [2(R-r)-1, 2(R-r)], above every later round's; unlabelled
unwanted rows get 0 and come last), scored and sorted like the ``random`` rule's key, so it is stored,
checked and ranked as every other rule's order is. Only counts reach the driver.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from distunlearn.errors import ParameterError
from distunlearn.pipeline import Fitted, Scored, order
from distunlearn.spark.checkpoints import freeze
from distunlearn.spark.ordering import RuleOrdering, score_unwanted
from distunlearn.spark.source import UNWANTED

if TYPE_CHECKING:
    from distunlearn.spark.downstream import Downstream

RETRAIN = "retrain_margin"


def rule_order(scored: Scored, rule: str, fitted: Fitted, downstream: "Downstream | None", rounds: int
               ) -> tuple[RuleOrdering, dict]:
    """One rule's deletion order and what it cost (fits, seconds): the retrain rule's rounds, or ``order``."""
    start = time.perf_counter()
    if rule != RETRAIN:
        return order(scored, rule, fitted), {"fits": 0, "seconds": time.perf_counter() - start}
    keys = retrain_keys(downstream, scored.keyed, rounds)
    keyed = scored.keyed.join(keys, "id", "left") \
        .select("id", "vec", F.coalesce(F.col("key"), F.lit(0.0)).alias("random_key"))
    rows = keyed if scored.chunks == 1 else freeze(score_unwanted(keyed, fitted.model, (RETRAIN,)), fitted.reliable)
    ordering = RuleOrdering(rows, RETRAIN, scored.n, fitted.model, scored.chunks, fitted.reliable)
    return ordering, {"fits": rounds, "rounds": rounds, "seconds": time.perf_counter() - start}


def retrain_keys(downstream: "Downstream", ordered: DataFrame, rounds: int) -> DataFrame:
    """(id, key) of the labelled unwanted rows of ``downstream`` (both splits) that are among the ``ordered``
    rows' ids, frozen: ``rounds`` refits, each deleting the next share of them (module docstring)."""
    from pyspark.ml.functions import vector_to_array

    if not downstream.classifier.estimator().hasParam("probabilityCol"):
        raise ParameterError(f"{{rule={RETRAIN}}} needs a {{classifier}} with class probabilities; "
                             f"{downstream.classifier.name} has none", "rule", "classifier")
    labelled = downstream.train.unionByName(downstream.test).where(F.col("domain") == F.lit(UNWANTED))
    candidates = freeze(labelled.join(ordered.select("id"), "id", "left_semi").select("id", "label", "features"))
    m = candidates.count()
    deleted = None
    for r in range(rounds):
        if deleted is None:
            model = downstream.train_model(downstream.train, F.lit(True))
            left = candidates
        else:
            ranked = downstream.with_ranks(deleted.select("id", F.lit(1).alias("rank")))
            model = downstream.train_model(ranked, F.col("rank").isNull())
            ranked.unpersist()
            left = candidates.join(deleted.select("id"), "id", "left_anti")
        own = vector_to_array(F.col("probability"))[F.col("label").cast("int")]
        scored = model.transform(left).select("id", own.alias("p"))
        take = round(m * (r + 1) / rounds) - round(m * r / rounds)
        chosen = scored.orderBy("p", "id").limit(take) if r < rounds - 1 else scored
        chosen = chosen.select("id", (F.lit(2.0 * (rounds - r)) - F.col("p")).alias("key"))
        deleted = freeze(chosen if deleted is None else deleted.unionByName(chosen))
    return deleted
