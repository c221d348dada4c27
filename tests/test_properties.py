"""Property tests of the numpy core (no Spark): moment merges, the pooled KL, and the exact budget scan.

Every property compares the core with something computed independently: ``DomainMoments.from_rows``
of all rows, ``tests/reference.py``'s refit-per-budget brute force, or a plain Python sort.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference
from distunlearn.core.gaussian import PooledGaussian
from distunlearn.core.moments import DomainMoments
from distunlearn.core.rules import RULES, score_rows
from distunlearn.core.selection import EditedKL, Thresholds, select_smallest_budget

EPS = np.finfo(np.float64).eps
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- moments: merge order does not matter

@st.composite
def row_sets(draw):
    """Rows (n x d) drawn value by value, a common offset (0 or large) and their spread scale."""
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 4))
    scale = draw(st.sampled_from([1e-2, 1.0, 100.0]))
    values = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-1.0, 1.0, allow_subnormal=False)))
    offset = draw(st.sampled_from([0.0, 1e4, -1e4]))
    return values * scale + offset, offset, scale


@st.composite
def splits(draw, n: int):
    """Cut points 0 = c0 <= c1 <= ... <= ck = n: parts of any size, empty ones included."""
    inner = draw(st.lists(st.integers(0, n), max_size=8))
    return [0, *sorted(inner), n]


def merge_in_random_order(parts: list[DomainMoments], picks) -> DomainMoments:
    """Merge a list of moments by repeatedly merging two parts chosen by ``picks`` (either side first)."""
    pool = list(parts)
    while len(pool) > 1:
        i = picks.draw(st.integers(0, len(pool) - 1))
        j = picks.draw(st.integers(0, len(pool) - 2))
        j = j + 1 if j >= i else j                    # any other part
        left, right = (pool[i], pool[j]) if picks.draw(st.booleans()) else (pool[j], pool[i])
        merged = left.merge(right)
        pool = [p for k, p in enumerate(pool) if k not in (i, j)] + [merged]
    return pool[0]


def assert_moments_close(got: DomainMoments, want: DomainMoments, offset: float, scale: float) -> None:
    """Same count exactly; mean and centred scatter within a few hundred roundings of the data's magnitude.

    The tolerance of ``m2`` scales with offset * spread (what a centred computation loses), not with
    offset^2 (what raw sums of squares would lose), so a merge that stops being centred fails it
    whenever the offset dwarfs the spread.
    """
    assert got.n == want.n
    magnitude = abs(offset) + scale
    np.testing.assert_allclose(got.mean, want.mean, rtol=0, atol=256 * EPS * magnitude)
    np.testing.assert_allclose(got.m2, want.m2, rtol=1e-9, atol=1024 * EPS * want.n * magnitude * scale)


@PROPERTY
@given(rows=row_sets(), data=st.data())
def test_merging_moments_is_associative_and_order_independent(rows, data):
    x, offset, scale = rows
    cuts = data.draw(splits(len(x)))
    parts = [DomainMoments.from_rows(x[lo:hi]) for lo, hi in zip(cuts, cuts[1:])]
    whole = DomainMoments.from_rows(x)

    first = merge_in_random_order(parts, data)
    shuffled = data.draw(st.permutations(parts))
    second = merge_in_random_order(shuffled, data)
    left_fold = parts[0]
    for part in parts[1:]:
        left_fold = left_fold.merge(part)

    for merged in (first, second, left_fold):
        assert_moments_close(merged, whole, offset, scale)
    assert_moments_close(first, second, offset, scale)


@PROPERTY
@given(n=st.integers(2, 60), d=st.integers(1, 4), seed=st.integers(0, 2**32 - 1), parts=st.integers(2, 12))
def test_centred_merge_keeps_a_tiny_spread_under_a_large_offset(n, d, seed, parts):
    """Spread 1e-3 under offset 1e4: raw sums of squares would be wrong by ~n*1e8*eps, far over the bound."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * 1e-3 + 1e4
    pieces = [DomainMoments.from_rows(chunk) for chunk in np.array_split(x, parts)]
    merged = pieces[0]
    for piece in pieces[1:]:
        merged = merged.merge(piece)
    centred = x - x.mean(0)
    np.testing.assert_allclose(merged.m2, centred.T @ centred, rtol=0, atol=1024 * EPS * n * 1e4 * 4e-3)


# ---------------------------------------------------------------- the pooled Gaussian's KL

@st.composite
def models(draw):
    """A model with a random, well-conditioned SPD covariance (eigenvalues in [1e-2, 1e2])."""
    d = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    eig = 10.0 ** rng.uniform(-2, 2, d)
    sigma = (q * eig) @ q.T
    sigma = (sigma + sigma.T) / 2
    return PooledGaussian.from_parameters(10, 20, np.zeros(d), np.ones(d), sigma)


# coordinates are 0 or at least 1e-100 in size: a difference below ~1e-154 squares to 0.0 in float64,
# which is rounding, not a KL property
vectors = st.floats(-100, 100).filter(lambda v: v == 0 or abs(v) >= 1e-100)


@PROPERTY
@given(model=models(), data=st.data())
def test_kl_is_nonnegative_and_zero_only_for_equal_means(model, data):
    d = model.dim
    a = np.array(data.draw(st.lists(vectors, min_size=d, max_size=d)))
    # b: equal to a, a copy with some coordinates changed (possibly by one ulp), or independent
    how = data.draw(st.sampled_from(["same", "ulp", "some", "any"]))
    b = a.copy()
    if how == "ulp":
        k = data.draw(st.integers(0, d - 1))
        b[k] = np.nextafter(a[k], np.inf) if a[k] != 0 else 1e-100
    elif how == "some":
        for k in data.draw(st.sets(st.integers(0, d - 1), min_size=1)):
            b[k] = data.draw(vectors)
    elif how == "any":
        b = np.array(data.draw(st.lists(vectors, min_size=d, max_size=d)))
    note(f"a={a!r} b={b!r}")

    forward, backward = model.kl(a, b), model.kl(b, a)
    assert forward >= 0 and backward >= 0
    assert (forward == 0) == bool(np.array_equal(a, b))
    assert forward == pytest.approx(backward, rel=1e-12, abs=0)          # shared covariance: symmetric
    assert forward == pytest.approx(reference.kl(a, b, model.sigma), rel=1e-8, abs=1e-300)


@PROPERTY
@given(n=st.integers(3, 40), d=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_kappa_is_zero_for_identical_domains_and_positive_otherwise(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d))
    same = PooledGaussian.fit(DomainMoments.from_rows(x), DomainMoments.from_rows(x.copy()))
    assert same.kappa == 0.0
    shifted = x.copy()
    shifted[:, 0] += 0.25
    apart = PooledGaussian.fit(DomainMoments.from_rows(x), DomainMoments.from_rows(shifted))
    assert apart.kappa > 0


# ---------------------------------------------------------------- the exact budget scan

@st.composite
def selection_cases(draw):
    """Small domains, with duplicated unwanted rows (exactly tied scores) in about half the cases."""
    n1 = draw(st.integers(1, 30))
    n2 = draw(st.integers(6, 80))
    d = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shift = draw(st.floats(0.2, 2.0))
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    offset = draw(st.sampled_from([0.0, 3.0, 100.0]))
    distinct = draw(st.integers(1, n1))
    ties = draw(st.booleans())
    base = rng.standard_normal((distinct if ties else n1, d)) + shift * direction + offset
    x1 = base[rng.integers(0, len(base), n1)] if ties else base
    x2 = rng.standard_normal((n2, d)) + offset
    ids = np.array(draw(st.lists(st.integers(-10**6, 10**6), min_size=n1, max_size=n1, unique=True)))
    # random-rule keys from a tiny range: ties there too
    keys = rng.integers(0, 3 if ties else 10**6, n1).astype(np.float64)
    rule = draw(st.sampled_from(RULES))
    return dict(x1=x1, x2=x2, ids=ids, keys=keys, rule=rule, ties=ties)


def fitted(x1, x2):
    model = PooledGaussian.fit(DomainMoments.from_rows(x1), DomainMoments.from_rows(x2))
    return model, EditedKL.from_model(model)


def brute_force_order(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Score descending, then id ascending: a plain Python sort, independent of numpy's lexsort."""
    return np.array(sorted(range(len(scores)), key=lambda i: (-scores[i], ids[i])), dtype=int)


def check_budget(case, thresholds: Thresholds):
    """Run the core's selection and check it against the refit-per-budget brute force of ``reference``.

    Thresholds derived from the data can sit exactly on a curve value (alpha_rel = 0 at f = 0, say),
    where the closed form and the refit may round apart; so a budget is "clearly met" or "met within
    rounding", and the core's f must be met within rounding while every smaller f is not clearly met.
    Where no curve value is that close (almost always), this pins f to the brute-force answer exactly.
    Returns the choice and the deleted row indices.
    """
    x1, x2, ids, rule = case["x1"], case["x2"], case["ids"], case["rule"]
    model, _ = fitted(x1, x2)
    y = model.whiten(x1)
    scores = score_rows(rule, model, x1, y, case["keys"])
    choice, deleted = select_smallest_budget(rule, model, thresholds, y, scores, ids)

    # the order: the core's scores sorted independently; the reference's own scores agree with it
    order = brute_force_order(scores, ids)
    sigma = reference.pooled_covariance(x1, x2)
    ref_scores = reference.scores(rule, x1, x2, sigma, case["keys"])
    spread = np.abs(ref_scores).max() + 1.0
    assert np.all(np.diff(ref_scores[order]) <= 1e-9 * spread), "the reference's scores disagree with the order"

    removal, preservation = reference.curves(x1, x2, order, sigma)
    tol_a = 1e-9 * max(abs(thresholds.alpha), 1e-12)
    tol_e = 1e-9 * max(abs(thresholds.epsilon), 1e-12) + 1e-15
    clearly = (removal >= thresholds.alpha + tol_a) & (preservation <= thresholds.epsilon - tol_e)
    roughly = (removal >= thresholds.alpha - tol_a) & (preservation <= thresholds.epsilon + tol_e)
    first_clear = int(np.flatnonzero(clearly)[0]) if clearly.any() else None
    note(f"rule={rule} f={choice.deleted} first_clear={first_clear} alpha={thresholds.alpha!r} "
         f"epsilon={thresholds.epsilon!r}")

    if choice.feasible:
        f = choice.deleted
        assert 0 <= f <= len(x1)
        assert roughly[f], "the chosen budget does not meet the thresholds"
        assert not clearly[:f].any(), f"a smaller budget {int(np.flatnonzero(clearly[:f])[0])} meets both"
        assert f == 0 or not clearly[f - 1]                  # minimal: one row fewer violates a threshold
        if first_clear is not None and not (roughly[:first_clear] & ~clearly[:first_clear]).any():
            assert f == first_clear                          # nothing near the boundary: exactly brute force
        # the deleted set is exactly the first f of (score desc, id asc), in that order
        assert list(deleted) == list(order[:f])
        assert choice.removal == pytest.approx(removal[f], rel=1e-7, abs=1e-12)
        assert choice.preservation == pytest.approx(preservation[f], rel=1e-7, abs=1e-12)
    else:
        assert len(deleted) == 0
        assert not clearly.any(), f"budget {first_clear} meets both thresholds but the core found none"
    return choice, deleted


@PROPERTY
@given(case=selection_cases(), alpha_rel=st.floats(0.0, 1.3), epsilon_rel=st.floats(0.2, 2.0))
def test_selection_is_the_brute_force_smallest_budget(case, alpha_rel, epsilon_rel):
    _, kl = fitted(case["x1"], case["x2"])
    check_budget(case, Thresholds.resolve(kl, alpha_rel=alpha_rel, epsilon_rel=epsilon_rel))
    event("tied scores" if case["ties"] else "distinct rows")


@PROPERTY
@given(case=selection_cases(), alpha_rel=st.floats(0.01, 0.99), epsilon_rel=st.floats(1.0, 2.0))
def test_selection_with_reachable_thresholds_always_finds_a_budget(case, alpha_rel, epsilon_rel):
    """With epsilon_rel >= 1 and alpha_rel < 1 deleting every unwanted row is feasible, so a budget exists."""
    _, kl = fitted(case["x1"], case["x2"])
    assume(kl.kappa > 1e-9)
    choice, _ = check_budget(case, Thresholds.resolve(kl, alpha_rel=alpha_rel, epsilon_rel=epsilon_rel))
    assert choice.feasible


@PROPERTY
@given(n1=st.integers(2, 30), n2=st.integers(6, 80), d=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       alpha_rel=st.floats(0.05, 0.95), rule=st.sampled_from([r for r in RULES if r != "random"]))
def test_identical_unwanted_rows_are_deleted_smallest_id_first(n1, n2, d, seed, alpha_rel, rule):
    """Every score tied: the deleted rows are the f smallest ids, whatever order the rows come in."""
    rng = np.random.default_rng(seed)
    x1 = np.repeat(rng.standard_normal((1, d)) + 1.5, n1, axis=0)
    x2 = rng.standard_normal((n2, d))
    ids = rng.permutation(10 * n1)[:n1] - 3 * n1
    case = dict(x1=x1, x2=x2, ids=ids, keys=np.zeros(n1), rule=rule, ties=True)
    _, kl = fitted(x1, x2)
    choice, deleted = check_budget(case, Thresholds.resolve(kl, alpha_rel=alpha_rel, epsilon_rel=1.0))
    assert choice.feasible and choice.deleted >= 1
    assert sorted(ids[deleted].tolist()) == sorted(ids.tolist())[: choice.deleted]
