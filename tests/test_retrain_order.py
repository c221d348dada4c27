"""The downstream objective's retrain-aware orders, its infeasible targets and its filtered fits: the
``retrain_margin`` and ``retrain_influence`` orders against scikit-learn refitted per round, a domain no
deletion can forget, and a random forest's budget against one searched on fits of filtered rows."""
from __future__ import annotations

import math
import re

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

from conftest import domain_table, write_delta
from distunlearn.cli import main
from distunlearn.config import UnlearnConfig
from distunlearn.core.budget_search import Fit, Target, search_budget
from distunlearn.core.curves import budget_grid
from distunlearn.job import plan_unlearning
from distunlearn.pipeline import Domains, read_labelled
from distunlearn.spark.downstream import Downstream, fit_partitions, split_by_id
from distunlearn.spark.source import RETAINED, UNWANTED

ROUNDS = 4


def labelled_table(n1: int, n2: int, shift: float, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((n1, 3)) + np.array([shift, 0.5 * shift, 0.0])
    table = domain_table(x1, rng.standard_normal((n2, 3)), seed=seed)
    unwanted = np.asarray(table.column("topic").to_pylist()) == "unwanted"
    return table.append_column("label", pa.array(unwanted.astype(np.int64)))


@pytest.fixture(scope="module")
def overlapping(spark, tmp_path_factory):
    table = labelled_table(220, 600, 1.4, seed=5)
    return write_delta(spark, table, tmp_path_factory.mktemp("retrain") / "labelled"), table


def config(path, **kw):
    return UnlearnConfig(**{"source": path, "unwanted": "label = 1", "objective": "downstream", "label_col": "label",
                            "budget_steps": 10, "dry_run": True, **kw})


def influence(x, y, keep, domain, rows):
    """n times the change of the domain's mean p(own label) when each row of ``rows`` leaves the training rows
    ``keep``: unregularized binomial logistic regression, its Hessian A and gradients written out."""
    clf = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x[keep], y[keep])
    xt = np.c_[x, np.ones(len(x))]
    p1 = clf.predict_proba(x)[:, list(clf.classes_).index(1)]
    w = p1 * (1 - p1)
    a = (xt[keep] * w[keep, None]).T @ xt[keep] / keep.sum()
    own_grad = np.where(y[domain] == 1, 1.0, -1.0)[:, None] * w[domain, None] * xt[domain]   # d p_y / d w
    v = np.linalg.solve(a, own_grad.mean(axis=0))
    return ((p1[rows] - y[rows])[:, None] * xt[rows]) @ v


@pytest.mark.parametrize("rule", ["retrain_margin", "retrain_influence"])
def test_retrain_order_equals_scikit_learn_refitted_per_round(spark, overlapping, rule):
    """Round r fits on the kept training rows and deletes the next share of the unwanted rows (both splits),
    ties by id: lowest probability of their own label first (retrain_margin), or lowest influence on the
    domain's mean probability of its own label (retrain_influence). The job's order is that list."""
    path, table = overlapping
    cfg = config(path, rule=rule, rounds=ROUNDS, reg_param=0.0, max_iter=1000, classifier_params={"tol": 1e-12})
    plan = plan_unlearning(spark, cfg, "retrain", keep_orderings=True)
    n1 = plan.kl.n1
    job_order = [r["id"] for r in sorted(plan.orderings[rule].deleted(n1).collect(), key=lambda r: r["rank"])]
    cost = plan.downstream["rules"][rule]["order"]
    assert cost["fits"] == ROUNDS and cost["seconds"] > 0

    # the same rounds in scikit-learn: unregularized logistic regression on the kept training rows
    train_ids = {r["id"] for r in split_by_id(read_labelled(spark, path, "delta", Domains.of(cfg), label_col="label")
                                              .rows, cfg.test_fraction, cfg.seed)[0].select("id").collect()}
    ids = table.column("id").to_numpy()
    x = np.asarray(table.column("embedding").to_pylist(), dtype=np.float64)
    y = np.asarray(table.column("label").to_pylist())
    train = np.isin(ids, list(train_ids))
    deleted = np.zeros(len(ids), bool)
    m, expected = int(y.sum()), []
    for r in range(ROUNDS):
        keep = train & ~deleted
        left = np.flatnonzero((y == 1) & ~deleted)
        if rule == "retrain_influence":
            s = influence(x, y, keep, y == 1, left)
        else:
            clf = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x[keep], y[keep])
            s = clf.predict_proba(x[left])[:, list(clf.classes_).index(1)]
        take = left[np.lexsort((ids[left], s))][:round(m * (r + 1) / ROUNDS) - round(m * r / ROUNDS)]
        deleted[take] = True
        expected += ids[take].tolist()
    assert len(expected) == m == n1
    assert job_order == expected


def test_a_domain_that_cannot_be_forgotten_exits_2_and_writes_nothing(spark, tmp_path, capsys):
    """A third of one class is the domain and the label is the class: the rest of the class teaches the
    classifier the same, so full removal barely moves the domain's accuracy."""
    rng = np.random.default_rng(8)
    x1 = rng.standard_normal((600, 3)) + np.array([3.0, 0.0, 0.0])
    table = domain_table(x1[:200], rng.standard_normal((600, 3)), x_neither=x1[200:], seed=2)
    topic = np.asarray(table.column("topic").to_pylist())
    table = table.append_column("label", pa.array((topic != "retained").astype(np.int64)))
    path = write_delta(spark, table, tmp_path / "third")
    out = tmp_path / "never"
    code = main(["unlearn", "--source", path, "--unwanted", "topic = 'unwanted'",
                 "--objective", "downstream", "--label-col", "label", "--output", str(out),
                 "--report", str(tmp_path / "r.json"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    line = err[-1]
    assert line.startswith("distunlearn: infeasible:") and "cannot be forgotten" in line, err
    all_data, full_removal, _, noise = map(float, re.findall(r"\d+\.\d+", line)[:4])
    test_rows = int(re.search(r"its (\d+) test rows", line).group(1))
    assert all_data - full_removal <= noise == pytest.approx(1 / math.sqrt(test_rows), abs=1e-4)
    assert not out.exists() and not (tmp_path / "r.json").exists()
    assert not (tmp_path / "never_manifest").exists() and not (tmp_path / "distunlearn_ledger").exists()


def test_random_forest_budget_equals_the_one_searched_on_filtered_fits(spark, overlapping, capsys):
    from pyspark.ml.classification import RandomForestClassifier
    from pyspark.sql import functions as F

    path, _ = overlapping
    params = {"numTrees": 8, "maxDepth": 4, "seed": 3}
    cfg = config(path, rule="ambiguous_first", classifier="RandomForestClassifier", classifier_params=params)
    assert not cfg.downstream_classifier.weighted
    plan = plan_unlearning(spark, cfg, "forest", keep_orderings=True)
    n1, down = plan.kl.n1, plan.downstream
    assert plan.chosen.feasible
    labelled = read_labelled(spark, path, "delta", Domains.of(cfg), label_col="label").rows
    downstream = Downstream(labelled, cfg.test_fraction, cfg.seed, cfg.downstream_classifier,
                            fit_partitions(n1 + plan.kl.n2, plan.model.dim))
    ordering = plan.orderings["ambiguous_first"]
    ranked = downstream.with_ranks(ordering.deleted(n1))

    def filtered(budgets):   # each budget's forest fitted on the kept rows alone
        fits = []
        for b in budgets:
            model = RandomForestClassifier(**params).fit(ranked.where(F.col("rank").isNull() | (F.col("rank") > b)))
            hits = model.transform(downstream.test).groupBy("domain").agg(
                F.avg((F.col("prediction") == F.col("label")).cast("double")).alias("a")).collect()
            accuracy = {r["domain"]: r["a"] for r in hits}
            fits.append(Fit(b, accuracy[UNWANTED], accuracy[RETAINED]))
        return fits

    grid = [int(b) for b in budget_grid(n1, cfg.budget_steps)]
    anchors = {f.budget: f for f in filtered([0, n1])}
    assert anchors[0].forget == pytest.approx(down["all_data"]["forget_accuracy"], abs=1e-12)
    preservation = ordering.curve(plan.kl, np.asarray(grid)).preservation
    allowed = list(preservation <= plan.thresholds.epsilon * (1 + 1e-9))
    target = Target.between(anchors[0], anchors[n1], cfg.downstream_target, cfg.retained_tolerance)
    search = search_budget(grid, allowed, target, filtered, known=anchors)
    assert search.budget == plan.chosen.deleted
    ranked.unpersist()
    downstream.release()
    # maxIter/regParam given for a classifier without them is an error, before any work
    assert main(["unlearn", "--source", path, "--unwanted", "label = 1", "--objective", "downstream",
                 "--label-col", "label", "--classifier", "RandomForestClassifier", "--reg-param", "0.1",
                 "--dry-run", "--quiet"]) == 1
    assert "--reg-param does not apply to RandomForestClassifier" in capsys.readouterr().err
    assert main(["unlearn", "--source", path, "--unwanted", "label = 1", "--rule", "retrain_margin", "--dry-run",
                 "--quiet"]) == 1
    assert "needs --objective downstream" in capsys.readouterr().err


def test_retrain_order_in_several_chunks_equals_the_one_chunk_order(spark, overlapping):
    from distunlearn.pipeline import fit, score
    from distunlearn.spark.retrain_order import rule_order

    path, _ = overlapping
    cfg = config(path, rule="retrain_margin")
    labelled = read_labelled(spark, path, "delta", Domains.of(cfg), label_col="label").rows
    fitted = fit(labelled, Domains.of(cfg), cfg.ridge)
    downstream = Downstream(labelled, cfg.test_fraction, cfg.seed, cfg.downstream_classifier, 1)
    orders = []
    for chunks in (1, 3):
        ordering, cost = rule_order(score(fitted, (), cfg.seed, chunks), "retrain_margin", fitted, downstream, 3)
        assert ordering.chunks == chunks and cost["fits"] == 3
        orders.append([r["id"] for r in sorted(ordering.deleted(fitted.model.n1).collect(), key=lambda r: r["rank"])])
    downstream.release()
    assert orders[0] == orders[1] and len(orders[0]) == fitted.model.n1
