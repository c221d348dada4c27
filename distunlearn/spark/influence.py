"""The ``retrain_influence`` rule's scores: influence functions of the fitted softmax (logistic) regression.

Deleting a training row z moves the fitted weights by about H^-1 grad l(z) / n (H: the Hessian of the mean
training loss and its L2 penalty, at the fit). The forget domain's mean probability of its own label,
S = mean p_y(x) over every unwanted row (deleted or not: the domain, not what is left of it), then changes by
about grad S . H^-1 grad l(z) / n; a row's score is that change times n, and the most negative go first.
One pass over the kept training rows sums the Hessian (one partial per task), one over the domain's rows
sums grad S; the driver solves for V = H^-1 grad S (K (d+1) numbers; it holds (K (d+1))^2) and a third pass
scores the rows. Only these sums reach the driver.
"""
from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from distunlearn.udfs.influence import gradient_partials, hessian_partials, influence_scorer

#: Relative ridge on the Hessian: it is singular along the weights every class shares, which no score sees.
RIDGE = 1e-9


def _arrays(model, rows: DataFrame, *extra: str) -> DataFrame:
    from pyspark.ml.functions import vector_to_array

    return model.transform(rows).select(*extra, vector_to_array("features").alias("x"),
                                        vector_to_array("probability").alias("p"))


def _sums(rows: DataFrame, fn, names: tuple[str, ...]) -> tuple[int, list[np.ndarray]]:
    """The row count and partial sums ``names`` of ``rows`` (one row of them per task), added on the driver."""
    parts = rows.mapInArrow(fn, "n bigint, " + ", ".join(f"{c} array<double>" for c in names)).collect()
    return sum(r["n"] for r in parts), [np.sum([np.asarray(r[c]) for r in parts], axis=0) for c in names]


def influence_scores(model, kept: DataFrame, domain: DataFrame, left: DataFrame) -> DataFrame:
    """(id, s) of the ``left`` rows (id, label, features): n times the change of S when each is deleted from
    the training rows ``kept`` (features) of ``model``; ``domain`` (label, features): the unwanted rows, all."""
    k, d = model.numClasses, model.numFeatures
    n, (sx, sxx, h) = _sums(_arrays(model, kept), hessian_partials(k, d), ("sx", "sxx", "h"))
    m, (g,) = _sums(_arrays(model, domain, F.col("label").cast("int").alias("y")), gradient_partials(k, d), ("g",))
    h = h.reshape(k * (d + 1), k * (d + 1)) / n
    scale = (sxx - np.square(sx) / n) / max(n - 1, 1) if model.getStandardization() else np.ones(d)
    # MLlib penalises reg/2 |w|^2 of the standardized weights; a binomial fit has one weight vector, the
    # Hessian here two (w and -w), so its penalty counts twice
    penalty = model.getRegParam() * (2.0 if k == 2 and model.getFamily() != "multinomial" else 1.0) * np.r_[scale, 0.0]
    h += np.diag(np.tile(penalty, k)) + RIDGE * np.trace(h) / len(h) * np.eye(len(h))
    v = np.linalg.solve(h, (g / max(m, 1)).ravel()).reshape(k, d + 1)
    return _arrays(model, left, "id", F.col("label").cast("int").alias("y")) \
        .mapInArrow(influence_scorer(v, k, d), f"id {left.schema['id'].dataType.simpleString()}, s double")
