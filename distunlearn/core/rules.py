"""Scoring rules: each unwanted row gets a score, and the highest scores are deleted first."""
from __future__ import annotations

import numpy as np

from distunlearn.core.gaussian import PooledGaussian

#: Rules evaluated by ``auto``, in the order used to break ties between equal budgets.
RULES = (
    "likelihood_ratio",
    "distance_to_retained",
    "mahalanobis_to_retained",
    "cosine_to_retained",
    "closest_to_unwanted",
    "ambiguous_first",
    "random",
)
#: Rules of the downstream objective only (they retrain its classifier): ``auto`` adds them there.
DOWNSTREAM_RULES = ("retrain_margin", "retrain_influence")
#: Rules whose score is a per-row key computed before scoring (``keys``), not a function of the vector.
KEYED_RULES = ("random", "retrain_margin", "retrain_influence")

RULE_HELP = {
    "distance_to_retained": "||x - mu2||: furthest from the retained mean first (the paper's rule)",
    "likelihood_ratio": "log p1(x)/p2(x) under the pooled model: most unwanted-like first",
    "mahalanobis_to_retained": "Mahalanobis distance to mu2 under the pooled covariance",
    "cosine_to_retained": "1 - cos(x, mu2): least aligned with the retained mean first",
    "closest_to_unwanted": "-||x - mu1||: closest to the unwanted mean first (coreset baseline)",
    "ambiguous_first": "-log p1(x)/p2(x): the unwanted rows most like the retained domain first (those near a "
                       "classifier's boundary; often fewer deletions for a retrained model, more for the KL)",
    "random": "a seeded hash of the id: uniform random order",
    "retrain_margin": "downstream objective only: --rounds rounds, each refits the classifier on the rows kept so "
                      "far and deletes the next 1/R of the unwanted rows, those least confident of their own label",
    "retrain_influence": "downstream objective only, logistic regression: --rounds rounds like retrain_margin, "
                         "deleting those whose removal lowers the domain's mean probability of its own label the "
                         "most by the fit's influence functions",
}


def score_rows(rule: str, model: PooledGaussian, x: np.ndarray, whitened: np.ndarray,
               random_keys: np.ndarray | None = None) -> np.ndarray:
    """Scores of rows ``x`` (raw, n x d) whose whitened form ``model.whiten(x)`` is given.

    ``random_keys`` (one number per row: a seeded hash of the id, or the key of a retrain rule's rounds) is
    the score of the ``KEYED_RULES``.
    """
    if rule == "likelihood_ratio":
        delta = model.delta
        return whitened @ delta + 0.5 * float(delta @ delta)
    if rule == "ambiguous_first":
        delta = model.delta
        return -(whitened @ delta + 0.5 * float(delta @ delta))
    if rule == "mahalanobis_to_retained":
        return np.sqrt(np.square(whitened + model.delta).sum(axis=1))
    if rule == "distance_to_retained":
        return np.sqrt(np.square(x - model.mu2).sum(axis=1))
    if rule == "closest_to_unwanted":
        return -np.sqrt(np.square(x - model.mu1).sum(axis=1))
    if rule == "cosine_to_retained":
        norms = np.sqrt(np.square(x).sum(axis=1)) * np.sqrt(float(model.mu2 @ model.mu2))
        dots = x @ model.mu2
        cos = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
        return 1.0 - cos
    if rule in KEYED_RULES:
        if random_keys is None:
            raise ValueError(f"the {rule} rule needs random_keys")
        return np.asarray(random_keys, dtype=np.float64)
    raise ValueError(f"unknown rule {rule!r}")
