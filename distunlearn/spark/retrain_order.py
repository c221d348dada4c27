"""The retrain rules' orders: rounds of refitting the downstream classifier.

Round r (of R) fits the classifier on the training rows kept so far and deletes the next share of the
unwanted rows (the first ``round(m (r+1) / R)`` in all, of ``m`` labelled ones), ties by id:
``retrain_margin`` those with the lowest predicted probability of their own label, ``retrain_influence``
(logistic regression) those whose deletion lowers the domain's mean probability of its own label the most
by the fit's influence functions (``influence``). Each round is one fit, its passes and one top-k (k rows
of (id, score) in one task). The order is then a key per row, ``2 (R - r) - q`` with ``q`` the score scaled
to [0, 1] within the round (round r's keys lie in [2(R-r)-1, 2(R-r)], above every later round's; unlabelled
unwanted rows get 0 and come last), scored and sorted like the ``random`` rule's key, so it is stored,
checked and ranked as every other rule's order is. Only counts and sums reach the driver.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from distunlearn.errors import ParameterError
from distunlearn.pipeline import Fitted, Scored, order
from distunlearn.spark.checkpoints import freeze
from distunlearn.spark.influence import influence_scores
from distunlearn.spark.ordering import RuleOrdering, score_unwanted
from distunlearn.spark.source import UNWANTED

if TYPE_CHECKING:
    from distunlearn.spark.downstream import Downstream

RETRAIN = "retrain_margin"
INFLUENCE = "retrain_influence"


def rule_order(scored: Scored, rule: str, fitted: Fitted, downstream: "Downstream | None", rounds: int
               ) -> tuple[RuleOrdering, dict]:
    """One rule's deletion order and what it cost (fits, seconds): the retrain rule's rounds, or ``order``."""
    start = time.perf_counter()
    if rule not in (RETRAIN, INFLUENCE):
        return order(scored, rule, fitted), {"fits": 0, "seconds": time.perf_counter() - start}
    keys = retrain_keys(downstream, scored.keyed, rounds, rule)
    keyed = scored.keyed.join(keys, "id", "left") \
        .select("id", "vec", F.coalesce(F.col("key"), F.lit(0.0)).alias("random_key"))
    rows = keyed if scored.chunks == 1 else freeze(score_unwanted(keyed, fitted.model, (rule,)), fitted.reliable)
    ordering = RuleOrdering(rows, rule, scored.n, fitted.model, scored.chunks, fitted.reliable)
    return ordering, {"fits": rounds, "rounds": rounds, "seconds": time.perf_counter() - start}


def retrain_keys(downstream: "Downstream", ordered: DataFrame, rounds: int, rule: str = RETRAIN) -> DataFrame:
    """(id, key) of the labelled unwanted rows of ``downstream`` (both splits) that are among the ``ordered``
    rows' ids, frozen: ``rounds`` refits, each deleting the next share of them by ``rule`` (module docstring)."""
    from pyspark.ml.functions import vector_to_array

    if not downstream.classifier.estimator().hasParam("probabilityCol"):
        raise ParameterError(f"{{rule={rule}}} needs a {{classifier}} with class probabilities; "
                             f"{downstream.classifier.name} has none", "rule", "classifier")
    if rule == INFLUENCE and downstream.classifier.name.rpartition(".")[2] != "LogisticRegression":
        raise ParameterError(f"{{rule={INFLUENCE}}} needs the LogisticRegression {{classifier}}, "
                             f"not {downstream.classifier.name}", "rule", "classifier")
    labelled = downstream.train.unionByName(downstream.test).where(F.col("domain") == F.lit(UNWANTED))
    candidates = freeze(labelled.join(ordered.select("id"), "id", "left_semi").select("id", "label", "features"))
    m = candidates.count()
    deleted = None
    for r in range(rounds):
        if deleted is None:
            ranked, kept = None, downstream.train
            model = downstream.train_model(kept, F.lit(True))
            left = candidates
        else:
            ranked = downstream.with_ranks(deleted.select("id", F.lit(1).alias("rank")))
            kept = ranked.where(F.col("rank").isNull())
            model = downstream.train_model(ranked, F.col("rank").isNull())
            left = candidates.join(deleted.select("id"), "id", "left_anti")
        if rule == INFLUENCE:
            scored = influence_scores(model, kept, candidates, left)
        else:
            own = vector_to_array(F.col("probability"))[F.col("label").cast("int")]
            scored = model.transform(left).select("id", own.alias("s"))
        take = round(m * (r + 1) / rounds) - round(m * r / rounds)
        chosen = freeze(scored.orderBy("s", "id").limit(take) if r < rounds - 1 else scored)
        if ranked is not None:
            ranked.unpersist()
        lo, hi = chosen.agg(F.min("s"), F.max("s")).first()
        q = (F.col("s") - F.lit(lo)) / F.lit(hi - lo) if hi is not None and hi > lo else F.lit(0.0)
        chosen = chosen.select("id", (F.lit(2.0 * (rounds - r)) - q).alias("key"))
        deleted = freeze(chosen if deleted is None else deleted.unionByName(chosen))
    return deleted
