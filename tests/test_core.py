"""The numpy core against independent brute force: moments, KL, rules, exact budgets."""
from __future__ import annotations

import math

import numpy as np
import pytest

import reference
from distunlearn.core.gaussian import PooledGaussian, oas_shrinkage
from distunlearn.core.moments import DomainMoments, merge_all
from distunlearn.core.rules import RULES, score_rows
from distunlearn.core.selection import (EditedKL, Thresholds, alpha_max, choose_budget, deletion_order, scan_chunk,
                                        select_smallest_budget)
from distunlearn.errors import DistunlearnError, ParameterError, flag
from distunlearn.synthetic import gaussian_domains


def fit(x1, x2, ridge=1e-6):
    return PooledGaussian.fit(DomainMoments.from_rows(x1), DomainMoments.from_rows(x2), ridge)


def test_merged_moments_stay_exact_with_a_large_offset():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5000, 4)) * 0.01 + 1e4
    parts = [DomainMoments.from_rows(chunk) for chunk in np.array_split(x, 37)]
    merged = merge_all(parts)
    centred = x - x.mean(0)
    assert merged.n == 5000
    np.testing.assert_allclose(merged.mean, x.mean(0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(merged.m2 / 4999, np.cov(centred.T), rtol=1e-7, atol=1e-13)
    # raw sums of squares lose the signal entirely at this offset
    raw = (x.T @ x - 5000 * np.outer(x.mean(0), x.mean(0))) / 4999
    assert not np.allclose(raw, np.cov(centred.T), rtol=1e-3)


def test_merge_with_empty_and_single_rows():
    x = np.arange(12, dtype=float).reshape(4, 3)
    singles = [DomainMoments.from_rows(r[None, :]) for r in x] + [DomainMoments.empty(3)]
    merged = merge_all(singles[::-1])
    np.testing.assert_allclose(merged.m2, DomainMoments.from_rows(x).m2)
    assert merge_all([]) is None


def test_pooled_gaussian_kl_matches_reference():
    x1, x2 = gaussian_domains(300, 900, 5, shift=0.8, seed=3)
    model = fit(x1, x2)
    sigma = reference.pooled_covariance(x1, x2)
    np.testing.assert_allclose(model.sigma, sigma, rtol=1e-10)
    assert model.kappa == pytest.approx(reference.kl(x1.mean(0), x2.mean(0), sigma), rel=1e-10)
    a, b = np.ones(5), np.zeros(5)
    assert model.kl(a, b) == pytest.approx(reference.kl(a, b, sigma), rel=1e-10)


def test_singular_covariance_needs_ridge():
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((2, 6)), rng.standard_normal((3, 6))
    with pytest.raises(ParameterError, match=r"pass ridge > 0 \(e.g. ridge=1e-3\)") as raised:
        fit(x1, x2, ridge=0.0)
    assert raised.value.parameter == "ridge" and "--" not in str(raised.value)
    assert raised.value.spelled(flag).endswith("pass --ridge > 0 (e.g. --ridge 1e-3)")
    assert fit(x1, x2, ridge=1e-3).kappa > 0


def sklearn_oas(x1, x2):
    """scikit-learn's OAS of both domains' rows, each centred on its own mean, rescaled from its 1/n
    normalisation to the pooled 1/(n-2); and its shrinkage weight."""
    from sklearn.covariance import OAS

    z = np.vstack([x1 - x1.mean(0), x2 - x2.mean(0)])
    n = len(z)
    oas = OAS(assume_centered=True).fit(z)
    return oas.covariance_ * n / (n - 2), oas.shrinkage_


@pytest.mark.parametrize("n1, n2, d", [
    pytest.param(40, 30, 50, id="few-rows-per-dim"),
    pytest.param(20, 15, 50, id="fewer-rows-than-dims"),
    pytest.param(3000, 2000, 8, id="many-rows-per-dim"),
])
def test_oas_matches_sklearn(n1, n2, d):
    x1, x2 = gaussian_domains(n1, n2, d, shift=1.0, seed=11, offset=3.0)
    expected, weight = sklearn_oas(x1, x2)
    shrunk, shrinkage = oas_shrinkage(reference.pooled_covariance(x1, x2, ridge=0.0), n1 + n2)
    assert shrinkage == pytest.approx(weight, rel=1e-10)
    np.testing.assert_allclose(shrunk, expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())
    model = PooledGaussian.fit(DomainMoments.from_rows(x1), DomainMoments.from_rows(x2), 0.0, "oas")
    np.testing.assert_allclose(model.sigma, expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())
    assert model.shrinkage == pytest.approx(weight, rel=1e-10)      # the weight the reports give
    # few rows per dimension shrink hard, many barely
    assert (0 < weight < 0.1) if n1 + n2 > 100 * d else (weight > 0.5)


def test_oas_model_whitens_by_the_shrunk_covariance():
    x1, x2 = gaussian_domains(40, 30, 50, shift=1.0, seed=12)
    sigma, _ = sklearn_oas(x1, x2)
    u, r = DomainMoments.from_rows(x1), DomainMoments.from_rows(x2)
    model = PooledGaussian.fit(u, r, ridge=0.0, covariance="oas")
    np.testing.assert_allclose(model.whitener @ sigma @ model.whitener.T, np.eye(50), atol=1e-9)
    centred = x1 - x1.mean(0)
    np.testing.assert_allclose(model.whiten(x1), np.linalg.solve(np.linalg.cholesky(sigma), centred.T).T,
                               rtol=1e-8, atol=1e-10)
    assert model.kappa == pytest.approx(reference.kl(x1.mean(0), x2.mean(0), sigma), rel=1e-9)
    # the ridge term is added after the shrinkage
    ridged = PooledGaussian.fit(u, r, ridge=1e-3, covariance="oas")
    np.testing.assert_allclose(ridged.sigma, sigma + 1e-3 * np.trace(sigma) / 50 * np.eye(50), rtol=1e-10)
    # "ridge" keeps the unshrunk pooled covariance
    np.testing.assert_allclose(PooledGaussian.fit(u, r, ridge=1e-6, covariance="ridge").sigma,
                               reference.pooled_covariance(x1, x2), rtol=1e-10)
    with pytest.raises(DistunlearnError, match="^covariance must be one of ridge, oas, got 'ledoit'"):
        PooledGaussian.fit(u, r, covariance="ledoit")


def test_oas_one_feature_does_not_shrink():
    sigma = np.array([[2.5]])
    shrunk, shrinkage = oas_shrinkage(sigma, 10)
    assert shrinkage == 0.0 and shrunk[0, 0] == 2.5


@pytest.mark.parametrize("rule", RULES)
def test_scores_match_reference(rule):
    x1, x2 = gaussian_domains(50, 200, 4, shift=1.0, seed=5, offset=2.0)
    model = fit(x1, x2)
    keys = np.random.default_rng(0).random(50)
    expected = reference.scores(rule, x1, x2, reference.pooled_covariance(x1, x2), keys)
    np.testing.assert_allclose(score_rows(rule, model, x1, model.whiten(x1), keys), expected, rtol=1e-9, atol=1e-12)


def thresholds_between_budgets(x1, x2, rule, keys, alpha_rel=0.5, epsilon_rel=1.0):
    model = fit(x1, x2)
    return model, Thresholds.resolve(EditedKL.from_model(model), alpha_rel=alpha_rel, epsilon_rel=epsilon_rel)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smallest_budget_equals_brute_force(rule, seed):
    x1, x2 = gaussian_domains(40, 160, 3, shift=0.7, seed=seed, offset=100.0)
    ids = np.random.default_rng(seed).permutation(40) * 2 + 1
    keys = np.random.default_rng(seed + 9).random(40)
    model, th = thresholds_between_budgets(x1, x2, rule, keys)
    choice, deleted = select_smallest_budget(rule, model, th, model.whiten(x1),
                                             score_rows(rule, model, x1, model.whiten(x1), keys), ids)
    f, expected = reference.smallest_budget(x1, x2, ids, rule, th.alpha, th.epsilon, random_keys=keys)
    assert choice.deleted == f
    if f is not None:
        assert sorted(deleted) == sorted(expected)
        sigma = reference.pooled_covariance(x1, x2)
        m_f = np.vstack([x2, np.delete(x1, deleted, axis=0)]).mean(0)
        assert choice.removal == pytest.approx(reference.kl(x1.mean(0), m_f, sigma), rel=1e-8)
        assert choice.preservation == pytest.approx(reference.kl(x2.mean(0), m_f, sigma), rel=1e-8, abs=1e-14)


def test_ties_are_broken_by_id_ascending():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((10, 2)) + np.array([2.0, 0.0])
    x1 = np.repeat(base, 4, axis=0)            # every score occurs four times
    x2 = rng.standard_normal((120, 2))
    ids = rng.permutation(40)
    model = fit(x1, x2)
    th = Thresholds.resolve(EditedKL.from_model(model), alpha_rel=0.3, epsilon_rel=1.0)
    scores = score_rows("distance_to_retained", model, x1, model.whiten(x1))
    choice, deleted = select_smallest_budget("distance_to_retained", model, th, model.whiten(x1), scores, ids)
    f, expected = reference.smallest_budget(x1, x2, ids, "distance_to_retained", th.alpha, th.epsilon)
    assert choice.deleted == f and list(deleted) == list(expected)
    order = deletion_order(scores, ids)
    for a, b in zip(order, order[1:]):
        assert scores[a] > scores[b] or (scores[a] == scores[b] and ids[a] < ids[b])


def test_chunked_scan_equals_one_scan():
    x1, x2 = gaussian_domains(500, 2000, 6, shift=0.5, seed=8)
    model = fit(x1, x2)
    kl = EditedKL.from_model(model)
    th = Thresholds.resolve(kl, alpha_rel=0.6, epsilon_rel=0.8)
    y = model.whiten(x1)
    y = y[deletion_order(score_rows("likelihood_ratio", model, x1, y), np.arange(500))]
    whole = choose_budget("lr", kl, th, [scan_chunk([y], kl, th, 0, np.zeros(6))])
    cuts = [0, 7, 7, 130, 131, 400, 500]          # includes an empty chunk and a one-row chunk
    scans, f0, z0 = [], 0, np.zeros(6)
    for lo, hi in zip(cuts, cuts[1:]):
        scans.append(scan_chunk(np.array_split(y[lo:hi], 3), kl, th, f0, z0))
        f0, z0 = hi, z0 + y[lo:hi].sum(0)
    chunked = choose_budget("lr", kl, th, scans[::-1])
    assert whole.deleted is not None and chunked.deleted == whole.deleted
    assert chunked.removal == pytest.approx(whole.removal, rel=1e-9)


def test_relative_thresholds_follow_their_definition():
    x1, x2 = gaussian_domains(200, 1000, 3, shift=1.0, seed=2)
    model = fit(x1, x2)
    kl = EditedKL.from_model(model)
    sigma = reference.pooled_covariance(x1, x2)
    m0 = np.vstack([x1, x2]).mean(0)
    before1, before2 = reference.kl(x1.mean(0), m0, sigma), reference.kl(x2.mean(0), m0, sigma)
    th = Thresholds.resolve(kl, alpha_rel=0.25, epsilon_rel=0.5)
    assert th.alpha == pytest.approx(before1 + 0.25 * (model.kappa - before1), rel=1e-9)
    assert th.epsilon == pytest.approx(0.5 * before2, rel=1e-9)
    # full removal: KL(p1||p_f) = kappa, KL(p2||p_f) = 0
    removal, preservation = kl.at(200, model.whiten(x1).sum(0))
    assert removal == pytest.approx(model.kappa, rel=1e-9) and preservation == pytest.approx(0, abs=1e-12)
    with pytest.raises(DistunlearnError):
        Thresholds.resolve(kl, alpha=-1.0, epsilon=0.1)
    with pytest.raises(DistunlearnError):
        Thresholds.resolve(kl, alpha=1.0, epsilon=math.nan)


def test_infeasible_reports_best_alpha_below_the_frontier():
    x1, x2 = gaussian_domains(60, 300, 3, shift=0.6, seed=6)
    model = fit(x1, x2)
    kl = EditedKL.from_model(model)
    th = Thresholds(alpha=10 * model.kappa, epsilon=kl.before[1])
    y = model.whiten(x1)
    order = deletion_order(score_rows("likelihood_ratio", model, x1, y), np.arange(60))
    choice = choose_budget("likelihood_ratio", kl, th, [scan_chunk([y[order]], kl, th, 0, np.zeros(3))])
    assert not choice.feasible
    sigma = reference.pooled_covariance(x1, x2)
    removal, preservation = reference.curves(x1, x2, order, sigma)
    assert choice.best_alpha == pytest.approx(removal[preservation <= th.epsilon].max(), rel=1e-9)
    assert choice.best_alpha <= alpha_max(model.kappa, th.epsilon)


def test_requested_rows_count_as_already_removed():
    from distunlearn.core.selection import Removed

    x1, x2 = gaussian_domains(50, 200, 3, shift=0.7, seed=12)
    ids = np.arange(50)
    model = fit(x1, x2)
    kl = EditedKL.from_model(model)
    th = Thresholds.resolve(kl, alpha_rel=0.6, epsilon_rel=1.0)
    requested1, requested2 = np.array([3, 17]), np.array([5, 6, 100])       # rows of S1 and of S2
    removed = Removed(5, model.whiten(x1[requested1]).sum(0) + model.whiten(x2[requested2]).sum(0))
    candidates = np.setdiff1d(np.arange(50), requested1)
    y = model.whiten(x1[candidates])
    scores = score_rows("likelihood_ratio", model, x1[candidates], y)
    choice, deleted = select_smallest_budget("likelihood_ratio", model, th, y, scores, ids[candidates], removed)

    sigma = reference.pooled_covariance(x1, x2)
    order = candidates[deletion_order(scores, ids[candidates])]
    kept2 = np.delete(x2, requested2, axis=0)
    for f in range(len(candidates) + 1):
        m_f = np.vstack([kept2, np.delete(x1, np.concatenate([requested1, order[:f]]), axis=0)]).mean(0)
        if reference.kl(x1.mean(0), m_f, sigma) >= th.alpha and reference.kl(x2.mean(0), m_f, sigma) <= th.epsilon:
            break
    assert choice.deleted == f and sorted(candidates[deleted]) == sorted(order[:f])


@pytest.mark.parametrize("seed", range(5))
def test_full_removal_target_at_epsilon_zero_deletes_the_whole_domain(seed):
    """alpha_rel 1 is kappa, which full removal reaches only up to rounding; epsilon 0 is met by full
    removal's KL(p2||p_f) = 0 up to rounding: one tolerance policy makes it feasible, at f = n1."""
    x1, x2 = gaussian_domains(30 + seed, 90, 4, shift=0.5, seed=seed, offset=1e3 * seed)
    model = fit(x1, x2)
    kl = EditedKL.from_model(model)
    th = Thresholds.resolve(kl, alpha_rel=1.0, epsilon=0.0)
    ids = np.arange(len(x1))
    for rule in ("likelihood_ratio", "distance_to_retained"):
        choice, deleted = select_smallest_budget(rule, model, th, model.whiten(x1),
                                                 score_rows(rule, model, x1, model.whiten(x1), None), ids)
        assert choice.deleted == len(x1) and sorted(deleted) == list(ids)
        assert th.met(choice.removal, choice.preservation)
