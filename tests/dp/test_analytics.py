"""course_lib.dp.analytics: contribution bounding, partition selection, noisy means, DP quantiles,
and agreement with OpenDP. Privacy claims are tested as an attacker would: by measuring how often
a user's own key escapes, and how far a heavy user can push a count."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from course_lib.dp.analytics import (
    CLINICS,
    Visit,
    bound_contributions,
    dp_count_by,
    dp_group_mean,
    dp_quantile,
    make_visit_log,
    partition_threshold,
    quantile_scores,
    rows_per_user,
    threshold_delta,
)
from course_lib.dp.auditing import clopper_pearson
from course_lib.dp.mechanisms import discrete_laplace_pmf, exponential_mechanism_probabilities
from course_lib.randomness import InsecureSeededRandom


@pytest.fixture(scope="module")
def log() -> list[Visit]:
    return make_visit_log(300, walk_in_users=5, rng=InsecureSeededRandom(0))


def _small_log(extra: list[Visit]) -> list[Visit]:
    base = [Visit(user, CLINICS[user % 3], 20.0) for user in range(60)]
    return base + extra


# -- the data --------------------------------------------------------------------------------------


def test_visit_log_is_reproducible_and_has_keys_only_one_user_holds(log: list[Visit]) -> None:
    again = make_visit_log(300, walk_in_users=5, rng=InsecureSeededRandom(0))
    assert again == log
    walk_ins = {v.clinic for v in log if v.clinic.startswith("walk-in")}
    assert len(walk_ins) == 5
    for key in walk_ins:
        assert len({v.user for v in log if v.clinic == key}) == 1
    counts = rows_per_user(log)
    assert set(counts) == set(range(300))
    assert max(counts.values()) >= 8  # a heavy tail: some users visit often


def test_visit_log_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="walk_in_users"):
        make_visit_log(3, walk_in_users=4)
    with pytest.raises(ValueError):
        make_visit_log(0)


# -- contribution bounding -------------------------------------------------------------------------


def test_bounding_caps_every_user_and_keeps_a_sub_multiset(log: list[Visit]) -> None:
    bounded = bound_contributions(log, 2, rng=InsecureSeededRandom(1))
    assert max(rows_per_user(bounded).values()) <= 2
    assert not Counter(bounded) - Counter(log)  # only original rows
    light = {u for u, c in rows_per_user(log).items() if c <= 2}
    assert [v for v in bounded if v.user in light] == [v for v in log if v.user in light]


def test_bounding_keeps_a_uniformly_random_subset() -> None:
    heavy = [Visit(0, f"c{i}", float(i)) for i in range(10)]
    kept = Counter()
    rng = InsecureSeededRandom(2)
    trials = 3000
    for _ in range(trials):
        kept.update(v.clinic for v in bound_contributions(heavy, 3, rng=rng))
    observed = np.array([kept[f"c{i}"] for i in range(10)])
    # each row kept with probability 3/10: a chi-square test that would catch "the first 3 rows"
    assert stats.chisquare(observed, np.full(10, trials * 0.3)).pvalue > 1e-3


def test_bounding_rejects_bad_input_before_doing_anything(log: list[Visit]) -> None:
    with pytest.raises(ValueError):
        bound_contributions(log, 0)
    with pytest.raises(TypeError):
        bound_contributions([("u", "c", 1.0)], 1)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="finite"):
        bound_contributions([Visit(0, "a", math.nan)], 1)


@pytest.mark.parametrize("alias", [math.nan, "7", 7.0, True])
def test_a_user_cannot_escape_the_bound_with_an_ambiguous_id(alias: object) -> None:
    """NaN ids are all different keys (NaN != NaN) and 7 / "7" would be two users: each would get
    its own max_rows. Only integer ids are taken, so one person is one key."""
    rows = [Visit(alias, "walk-in #1", 20.0) for _ in range(10)]  # type: ignore[arg-type]
    rows += [Visit(7, "walk-in #1", 20.0)]
    with pytest.raises(TypeError, match="user id must be an integer"):
        bound_contributions(rows, 1)
    with pytest.raises(TypeError, match="user id must be an integer"):
        dp_count_by(rows, 1.0, 1e-6, 1)
    kept = bound_contributions([Visit(np.int64(7), "a", 1.0), Visit(7, "a", 1.0)], 1)
    assert len(kept) == 1  # a NumPy integer is the same user as the Python one


# -- partition selection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epsilon", "delta", "k"), [(1.0, 1e-6, 1), (0.5, 1e-5, 3), (4.0, 1e-9, 8)]
)
def test_threshold_is_the_smallest_integer_meeting_delta(
    epsilon: float, delta: float, k: int
) -> None:
    scale, tau = partition_threshold(epsilon, delta, k)
    assert scale == k / epsilon
    assert threshold_delta(scale, tau, k) <= delta < threshold_delta(scale, tau - 1, k)
    # the textbook approximation k + (k/ε)·ln(k/(2δ)) is within one step of it
    assert abs(tau - (k + k / epsilon * math.log(k / (2 * delta)))) < 2


def test_threshold_delta_is_the_discrete_laplace_tail() -> None:
    s, tau, k = 2.0, 9, 1
    # P[1 + Z ≥ 9] = Σ_{z≥8} P[Z = z], with P[Z = z] = tanh(1/(2s))·e^{-|z|/s}
    tail = sum(math.tanh(1 / (2 * s)) * math.exp(-z / s) for z in range(8, 400))
    assert threshold_delta(s, tau, k) == pytest.approx(tail, rel=1e-12)
    assert threshold_delta(s, 1, 1) == 1.0  # one user alone reaches the threshold


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_bad_budgets_are_refused_before_any_noise(bad: float, log: list[Visit]) -> None:
    class Exploding(InsecureSeededRandom):
        def bytes(self, n: int) -> bytes:
            raise AssertionError("randomness drawn before the input was checked")

    with pytest.raises(ValueError):
        dp_count_by(log, bad, 1e-6, 2, rng=Exploding(0))
    with pytest.raises(ValueError):
        dp_count_by(log, 1.0, bad if bad != 0.0 else 1.5, 2, rng=Exploding(0))
    with pytest.raises(ValueError):
        dp_group_mean(log, 1.0, bad, 1e-6, 2, lower=0, upper=60, rng=Exploding(0))
    with pytest.raises(ValueError):
        dp_quantile([1.0, 2.0], 0.5, bad, candidates=[0.0, 1.0, 2.0], rng=Exploding(0))


def test_a_key_of_one_user_leaks_at_most_delta_measured() -> None:
    # Attack: the walk-in key of user 999 (one row, k = 1) is released iff its noisy count ≥ τ.
    # With δ = 0.05 the release rate is measurable; it must match the exact tail and stay ≤ δ.
    epsilon, delta, k = 1.0, 0.05, 1
    scale, tau = partition_threshold(epsilon, delta, k)
    exact = threshold_delta(scale, tau, k)
    table = _small_log([Visit(999, "walk-in #1", 20.0)])
    rng = InsecureSeededRandom(3)
    trials = 4000
    leaks = sum(
        "walk-in #1" in dp_count_by(table, epsilon, delta, k, rng=rng) for _ in range(trials)
    )
    low, high = clopper_pearson(leaks, trials, 1e-3)
    assert low <= exact <= high
    assert low <= delta


def test_a_key_of_one_user_is_never_released_at_a_small_delta(log: list[Visit]) -> None:
    walk_ins = {v.clinic for v in log if v.clinic.startswith("walk-in")}
    rng = InsecureSeededRandom(4)
    for _ in range(300):
        released = dp_count_by(log, 1.0, 1e-6, 3, rng=rng)
        assert not walk_ins & set(released)
        assert set(released) <= set(CLINICS)


def test_a_heavy_user_cannot_push_their_own_key_over_the_threshold() -> None:
    # Without bounding, 40 rows in a private key clear τ ≈ 14 (k = 1, ε = 1, δ = 1e-6) every
    # time; with bounding the user counts once and the key stays hidden.
    _, tau = partition_threshold(1.0, 1e-6, 1)
    assert tau + 10 < 40
    table = _small_log([Visit(999, "walk-in #2", 20.0)] * 40)
    rng = InsecureSeededRandom(5)
    assert not any("walk-in #2" in dp_count_by(table, 1.0, 1e-6, 1, rng=rng) for _ in range(500))


def test_counts_are_unbiased_with_the_promised_noise(log: list[Visit]) -> None:
    rng = InsecureSeededRandom(6)
    k, epsilon = 2, 1.0
    # the true count on a bounded table depends on which rows are kept: use a log with ≤ k rows
    table = bound_contributions(log, k, rng=rng)
    truth = Counter(v.clinic for v in table)["general practice"]
    errors = np.array(
        [
            dp_count_by(table, epsilon, 1e-6, k, rng=rng)["general practice"] - truth
            for _ in range(2000)
        ]
    )
    b = k / epsilon  # discrete Laplace variance 2e^{-1/b}/(1-e^{-1/b})²
    variance = 2 * math.exp(-1 / b) / (1 - math.exp(-1 / b)) ** 2
    assert abs(errors.mean()) < 4 * math.sqrt(variance / len(errors))
    assert errors.var() == pytest.approx(variance, rel=0.12)


def test_secure_randomness_is_the_default(log: list[Visit]) -> None:
    seeded = [dp_count_by(log, 1.0, 1e-6, 2, rng=InsecureSeededRandom(7)) for _ in range(2)]
    assert seeded[0] == seeded[1]
    fresh = [dp_count_by(log, 1.0, 1e-6, 2) for _ in range(3)]
    assert fresh[0] != fresh[1] or fresh[1] != fresh[2]


# -- means -----------------------------------------------------------------------------------------


def test_group_means_are_noisy_sum_over_noisy_count_and_stay_in_range(log: list[Visit]) -> None:
    rng = InsecureSeededRandom(8)
    result = dp_group_mean(log, 1.0, 1.0, 1e-6, 2, lower=0.0, upper=120.0, rng=rng)
    assert set(result) <= set(CLINICS) and "general practice" in result
    for group in result.values():
        assert 0.0 <= group.mean <= 120.0
        assert group.total / group.count == pytest.approx(group.mean, rel=1e-9)


def test_group_means_concentrate_on_the_clamped_truth() -> None:
    table = [Visit(u, "a", 10.0 + (u % 5)) for u in range(2000)]  # true mean 12
    rng = InsecureSeededRandom(9)
    means = [dp_group_mean(table, 1.0, 1.0, 1e-6, 1, lower=0, upper=40, rng=rng)["a"].mean
             for _ in range(200)]  # fmt: skip
    assert np.mean(means) == pytest.approx(12.0, abs=0.05)
    # noise of the sum: Laplace scale 20/1 over n = 2000 → std of the mean ≈ 20·√2/2000
    assert np.std(means) == pytest.approx(20 * math.sqrt(2) / 2000, rel=0.25)


def test_group_mean_refuses_an_empty_range(log: list[Visit]) -> None:
    with pytest.raises(ValueError, match="lower < upper"):
        dp_group_mean(log, 1.0, 1.0, 1e-6, 2, lower=5.0, upper=5.0)


# -- quantiles -------------------------------------------------------------------------------------


def test_quantile_scores_by_hand() -> None:
    values = [1.0, 2.0, 2.0, 3.0, 10.0]
    scores = quantile_scores(values, [0.0, 2.0, 2.5, 11.0], 0.5)
    # c = 0: below 0, above 5 → −2.5; c = 2: 1 below, 2 above → −0.5; c = 2.5: 3, 2 → −0.5
    assert scores.tolist() == [-2.5, -0.5, -0.5, -2.5]


def test_dp_quantile_samples_the_exponential_mechanism() -> None:
    values = np.random.default_rng(0).normal(5, 2, 40)
    candidates = np.arange(0.0, 11.0)
    probabilities = exponential_mechanism_probabilities(
        quantile_scores(values, candidates, 0.5), 0.5, 0.5
    ).numpy()
    rng = InsecureSeededRandom(10)
    draws = Counter(
        dp_quantile(values, 0.5, 0.5, candidates=candidates, rng=rng) for _ in range(3000)
    )
    observed = np.array([draws[c] for c in candidates])
    expected = probabilities * 3000
    keep = expected > 5
    rest = observed[~keep].sum(), expected[~keep].sum()
    statistic = stats.chisquare(np.r_[observed[keep], rest[0]], np.r_[expected[keep], rest[1]])
    assert statistic.pvalue > 1e-3


def test_dp_quantile_is_accurate_at_large_epsilon() -> None:
    values = np.arange(1.0, 101.0)
    answer = dp_quantile(
        values, 0.25, 50.0, candidates=np.arange(0.0, 101.0), rng=InsecureSeededRandom(1)
    )
    assert abs(answer - 25.5) <= 1.0


def test_dp_quantile_refuses_data_chosen_or_bad_candidates() -> None:
    with pytest.raises(TypeError):
        dp_quantile([1.0], 0.5, 1.0, candidates={1.0, 2.0})
    with pytest.raises(ValueError, match="increasing"):
        dp_quantile([1.0], 0.5, 1.0, candidates=[2.0, 1.0])
    with pytest.raises(ValueError, match="alpha"):
        dp_quantile([1.0], 1.5, 1.0, candidates=[1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        dp_quantile([1.0, math.nan], 0.5, 1.0, candidates=[1.0, 2.0])


# -- OpenDP, checked against the hand-written versions ---------------------------------------------


def test_opendp_partition_selection_agrees_with_ours(log: list[Visit]) -> None:
    pytest.importorskip("opendp")
    from course_lib.dp.analytics import opendp_count_by

    k, epsilon, delta = 2, 1.0, 1e-6
    scale, tau = partition_threshold(epsilon, delta, k)
    table = bound_contributions(log, k, rng=InsecureSeededRandom(11))
    truth = Counter(v.clinic for v in table)
    ours, theirs = [], []
    rng = InsecureSeededRandom(12)
    for _ in range(600):
        released, (eps_odp, delta_odp) = opendp_count_by(table, scale, tau, k)
        assert not {key for key in released if key.startswith("walk-in")}
        theirs.append(released["general practice"] - truth["general practice"])
        ours.append(
            dp_count_by(table, epsilon, delta, k, rng=rng)["general practice"]
            - truth["general practice"]
        )
    # same ε; OpenDP's δ is ours up to one noise step (its proof is tighter by e^{-1/scale})
    assert eps_odp == pytest.approx(epsilon)
    ours_delta = threshold_delta(scale, tau, k)
    assert delta_odp <= ours_delta <= delta_odp * math.exp(1 / float(scale)) * 1.001
    # the same error distribution: variances (F-test) and a two-sample KS test
    # (OpenDP cannot be seeded: every bound is loose enough to fail a correct pair < 1e-3 of runs)
    f = np.var(ours, ddof=1) / np.var(theirs, ddof=1)
    assert 0.6 < f < 1.67  # about five standard errors of a Laplace variance ratio at 600 runs
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-4
    for errors in (ours, theirs):  # and each against the exact discrete Laplace of scale k/ε
        values = np.arange(-6, 7)
        pmf = discrete_laplace_pmf(values, float(scale))
        observed = np.r_[[np.sum(np.asarray(errors) == v) for v in values],
                         np.sum(np.abs(errors) > 6)]  # fmt: skip
        expected = np.r_[pmf, 1 - pmf.sum()] * len(errors)
        assert stats.chisquare(observed, expected).pvalue > 1e-4


def test_opendp_quantile_is_the_same_exponential_mechanism() -> None:
    pytest.importorskip("opendp")
    from course_lib.dp.analytics import opendp_quantile

    values = np.random.default_rng(1).normal(5, 2, 40)
    candidates = np.arange(0.0, 11.0)
    rng = InsecureSeededRandom(13)
    ours = [dp_quantile(values, 0.5, 0.5, candidates=candidates, rng=rng) for _ in range(1500)]
    theirs, spent = zip(
        *(opendp_quantile(values, 0.5, 0.5, candidates=candidates) for _ in range(1500)),
        strict=True,
    )
    assert spent[0] == pytest.approx(0.5)
    table = np.array(
        [[Counter(ours)[c] for c in candidates], [Counter(theirs)[c] for c in candidates]]
    )
    table = table[:, table.sum(axis=0) > 0]
    assert stats.chi2_contingency(table).pvalue > 1e-4
    # user level: k rows per user cost k times as much, and OpenDP's map says so
    assert opendp_quantile(values, 0.5, 0.5, candidates=candidates, max_rows=3)[1] == pytest.approx(
        0.5
    )


def test_opendp_refuses_an_unbounded_table(log: list[Visit]) -> None:
    pytest.importorskip("opendp")
    from course_lib.dp.analytics import opendp_count_by

    with pytest.raises(ValueError, match="bound them first"):
        opendp_count_by(log, 2.0, 30, 1)
