"""``unlearn --objective downstream``: the searched budget against an exhaustive scan of every grid budget,
the KL bound checked independently, string labels, and a written run that ``verify`` accepts."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

import reference
from conftest import domain_table, write_delta
from distunlearn.cli import main
from distunlearn.config import UnlearnConfig
from distunlearn.core.budget_search import Target
from distunlearn.core.curves import budget_grid
from distunlearn.errors import DistunlearnError
from distunlearn.job import plan_unlearning
from distunlearn.pipeline import Domains, read_labelled
from distunlearn.spark.downstream import Downstream

RULE = "ambiguous_first"
STEPS = 12


@pytest.fixture(scope="module")
def overlapping(spark, tmp_path_factory):
    """Two overlapping Gaussian classes: the unwanted one (label 1, "spam") is recalled less and less as
    its training rows go. Numeric and string labels of the same rows."""
    rng = np.random.default_rng(11)
    x1 = rng.standard_normal((260, 4)) + np.array([1.6, 0.8, 0.0, 0.0])
    x2 = rng.standard_normal((900, 4))
    table = domain_table(x1, x2, seed=3)
    unwanted = np.asarray(table.column("topic").to_pylist()) == "unwanted"
    table = table.append_column("label", pa.array(unwanted.astype(np.int64)))
    table = table.append_column("kind", pa.array(np.where(unwanted, "spam", "ham")))
    path = write_delta(spark, table, tmp_path_factory.mktemp("downstream") / "labelled")
    return path, table


def config(path, **kw):
    return UnlearnConfig(**{"source": path, "unwanted": "label = 1", "objective": "downstream", "label_col": "label",
                            "rule": RULE, "budget_steps": STEPS, "dry_run": True, **kw})


@pytest.fixture(scope="module")
def numeric_plan(spark, overlapping):
    return plan_unlearning(spark, config(overlapping[0]), "search", keep_orderings=True)


def test_searched_budget_equals_an_exhaustive_scan_and_keeps_the_kl_bound(spark, overlapping, numeric_plan):
    path, table = overlapping
    cfg, plan = config(path), numeric_plan
    down, n1 = plan.downstream, plan.kl.n1
    assert plan.chosen.feasible and plan.chosen.rule == RULE
    # every budget of the same grid, fitted on the same cached split and order
    labelled = read_labelled(spark, path, "delta", Domains.of(cfg), label_col="label")
    downstream = Downstream(labelled.rows, cfg.test_fraction, cfg.seed, cfg.downstream_classifier, 1)
    ordering = plan.orderings[RULE]
    grid = [int(b) for b in budget_grid(n1, STEPS)]
    ranked = downstream.with_ranks(ordering.deleted(n1))
    fits = {f.budget: f for f in downstream.fit(ranked, grid)}
    target = Target.between(fits[0], fits[n1], 0.5, 0.01)
    assert target.forget_max == pytest.approx(down["target"]["forget_accuracy_at_most"], abs=1e-12)
    preservation = ordering.curve(plan.kl, np.asarray(grid)).preservation
    allowed = preservation <= plan.thresholds.epsilon * (1 + 1e-9)
    exhaustive = next(b for b, ok in zip(grid, allowed) if ok and target.met(fits[b]))
    step = max(np.diff(grid))
    assert abs(plan.chosen.deleted - exhaustive) <= step, (plan.chosen.deleted, exhaustive, down["rules"][RULE])
    search = down["rules"][RULE]
    assert down["fits_made"] == len(search["fits"]) + 2 < len(grid)      # fewer fits than the exhaustive scan
    for fit in search["fits"]:                                           # the search's fits are the scan's
        assert fit["forget_accuracy"] == pytest.approx(fits[fit["budget"]].forget, abs=1e-12)
    # the deleted rows, checked with plain numpy: KL(p2||p_f) <= epsilon, as KL(p2||p_0) today
    ids = {r["id"] for r in ordering.deleted(plan.chosen.deleted).collect()}
    x = np.asarray(table.column("embedding").to_pylist())
    row_ids = table.column("id").to_numpy()
    is_unwanted = np.asarray(table.column("label").to_pylist()) == 1
    kept = ~np.isin(row_ids, list(ids))
    x1, x2 = x[is_unwanted], x[~is_unwanted]
    sigma = reference.pooled_covariance(x1, x2)
    m_f = x[kept].mean(0)
    assert reference.kl(x2.mean(0), m_f, sigma) <= reference.kl(x2.mean(0), x.mean(0), sigma) + 1e-12
    assert reference.kl(x2.mean(0), m_f, sigma) == pytest.approx(plan.chosen.preservation, rel=1e-8)
    ranked.unpersist()
    downstream.release()


def test_string_labels_cli_run_manifest_ledger_and_verify(spark, overlapping, numeric_plan, tmp_path, capsys):
    path, _ = overlapping
    numeric = numeric_plan.chosen.deleted
    out = tmp_path / "edited"
    argv = ["unlearn", "--source", path, "--unwanted", "kind = 'spam'", "--objective", "downstream",
            "--label-col", "kind", "--rule", RULE, "--budget-steps", str(STEPS), "--output", str(out),
            "--run-id", "down-1", "--report", str(tmp_path / "r.json"), "--quiet"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "objective downstream" in stdout and "fits" in stdout
    report = json.loads((tmp_path / "r.json").read_text())
    # "ham" is the more frequent label, so it is index 0, as with the numeric label: the same budget
    assert report["downstream"]["labels"] == ["ham", "spam"] and report["deleted"] == numeric
    assert report["objective"] == "downstream" and report["downstream"]["fits_made"] >= 3
    manifest = spark.read.format("delta").load(report["manifest"])
    assert {r["reason"] for r in manifest.select("reason").distinct().collect()} == {"downstream"}
    assert manifest.count() == report["deleted"]
    ledger = spark.read.format("delta").load(str(tmp_path / "distunlearn_ledger")).where("run_id = 'down-1'")
    assert json.loads(ledger.first()["report"])["downstream"]["rules"][RULE]["budget"] == report["deleted"]
    assert main(["verify", "--source", str(out), "--run-id", "down-1", "--quiet"]) == 0
    assert "PASS preservation" in capsys.readouterr().out


def test_bad_downstream_settings_fail_with_one_line_and_write_nothing(spark, overlapping, tmp_path, capsys):
    path, _ = overlapping
    out = tmp_path / "never"
    base = ["unlearn", "--source", path, "--unwanted", "label = 1", "--output", str(out), "--quiet"]
    for extra, message in ((["--objective", "downstream"], "--label-col"),
                           (["--objective", "downstream", "--label-col", "label", "--alpha-rel", "0.5"],
                            "--downstream-target"),
                           (["--objective", "downstream", "--label-col", "label", "--downstream-target", "2"],
                            "--downstream-target"),
                           (["--objective", "downstream", "--label-col", "label", "--classifier", "NoSuchModel",
                             "--rule", RULE], "NoSuchModel")):
        assert main(base + extra) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("distunlearn: error:") and message in err[-1], err
    assert not out.exists()


def test_weighted_edits_equal_filtered_ones_and_any_classifier_fits(spark, overlapping, numeric_plan):
    """An edit is a 0/1 weight for classifiers that take weights: the same model as dropping the rows.
    A classifier without ``weightCol`` (the multilayer perceptron) gets the rows filtered instead."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.sql import functions as F

    from distunlearn.spark.downstream import Classifier

    path, _ = overlapping
    labelled = read_labelled(spark, path, "delta", Domains.of(config(path)), label_col="label").rows
    n1, budget = numeric_plan.kl.n1, numeric_plan.kl.n1 // 2
    ranks = numeric_plan.orderings[RULE].deleted(n1)
    lr = Downstream(labelled, 0.2, 0, Classifier("LogisticRegression", {"maxIter": 100, "regParam": 1e-4}), 1)
    assert lr.weighted
    ranked = lr.with_ranks(ranks)
    weighted = lr.fit(ranked, [budget])[0]
    kept = ranked.where(F.col("rank").isNull() | (F.col("rank") > budget))
    model = LogisticRegression(maxIter=100, regParam=1e-4).fit(kept)
    scored = model.transform(lr.test).where("domain = 1")
    filtered = scored.agg(F.avg((F.col("prediction") == F.col("label")).cast("double"))).first()[0]
    assert weighted.forget == pytest.approx(filtered, abs=1e-12)
    ranked.unpersist()
    lr.release()
    mlp = Downstream(labelled, 0.2, 0, Classifier("pyspark.ml.classification.MultilayerPerceptronClassifier",
                                                  {"layers": [4, 2], "maxIter": 30, "seed": 1}), 1)
    assert not mlp.weighted
    ranked = mlp.with_ranks(ranks)
    all_data, removed = mlp.fit(ranked, [0, n1])
    assert all_data.forget > 0.3 and removed.forget == 0.0 and removed.retained > 0.9
    ranked.unpersist()
    mlp.release()
    with pytest.raises(DistunlearnError, match="has no param 'nope'"):
        Classifier("LogisticRegression", {"nope": 1}).estimator()
