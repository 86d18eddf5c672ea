"""course_lib.dp.auditing: Clopper–Pearson against scipy, the ε lower bound's false-positive rate
played out against mechanisms whose true ε is known, the one-run bound against a brute-force
evaluation of Steinke, Nasr & Jagielski's Theorem 3.1, and bad input refused before any work."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import special, stats

from course_lib.dp.auditing import (
    audit_epsilon,
    audit_scores,
    choose_threshold,
    clopper_pearson,
    epsilon_lower_bound,
    gaussian_epsilon,
    max_posterior,
    one_run_audit,
    one_run_epsilon_lower_bound,
    one_run_p_value,
)
from course_lib.dp.mechanisms import gaussian_delta

# -- Clopper–Pearson -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "alpha"),
    [(7, 20, 0.05), (0, 50, 0.05), (50, 50, 0.05), (1, 1000, 0.01), (3, 4, 0.2), (500, 1000, 0.1)],
)
def test_clopper_pearson_matches_scipy(k: int, n: int, alpha: float) -> None:
    want = stats.binomtest(k, n).proportion_ci(1 - alpha, method="exact")
    low, high = clopper_pearson(k, n, alpha)
    assert low == pytest.approx(want.low, rel=1e-9, abs=1e-12)
    assert high == pytest.approx(want.high, rel=1e-9, abs=1e-12)


def test_clopper_pearson_known_values() -> None:
    # 0 of n: the upper end solves (1 − p)^n = α/2; n of n: the lower end solves p^n = α/2
    assert clopper_pearson(0, 10, 0.05) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))
    assert clopper_pearson(10, 10, 0.05) == pytest.approx((0.025 ** (1 / 10), 1.0))


def test_clopper_pearson_covers_the_true_proportion() -> None:
    """Each end fails with probability ≤ α/2 (exactly computed over all outcomes)."""
    n, alpha = 40, 0.1
    for p in (0.03, 0.2, 0.5, 0.77):
        pmf = stats.binom.pmf(np.arange(n + 1), n, p)
        ends = [clopper_pearson(k, n, alpha) for k in range(n + 1)]
        assert sum(w for w, (low, _) in zip(pmf, ends, strict=True) if low > p) <= alpha / 2
        assert sum(w for w, (_, high) in zip(pmf, ends, strict=True) if high < p) <= alpha / 2


# -- the lower bound from rates --------------------------------------------------------------------


def test_epsilon_lower_bound_formula() -> None:
    assert epsilon_lower_bound(0.9, 0.01) == pytest.approx(math.log(90))
    assert epsilon_lower_bound(0.5, 0.1, 1e-5) == pytest.approx(math.log((0.5 - 1e-5) / 0.1))
    # the second inequality: 1 − FPR ≤ e^ε (1 − TPR) + δ
    assert epsilon_lower_bound(0.999, 0.6) == pytest.approx(math.log(0.4 / 0.001))
    assert epsilon_lower_bound(0.3, 0.3) == 0.0
    assert epsilon_lower_bound(0.05, 0.2) == 0.0  # a test worse than guessing rules nothing out
    assert epsilon_lower_bound(0.5, 0.0) == math.inf
    assert epsilon_lower_bound(1e-6, 0.0, 1e-5) == 0.0  # TPR ≤ δ: consistent with any ε


def test_audit_epsilon_uses_the_conservative_ends() -> None:
    result = audit_epsilon(90, 100, 3, 100, delta=1e-5, alpha=0.05)
    tpr_low = clopper_pearson(90, 100, 0.05)[0]
    fpr_high = clopper_pearson(3, 100, 0.05)[1]
    assert result.epsilon_lower == pytest.approx(epsilon_lower_bound(tpr_low, fpr_high, 1e-5))
    assert result.epsilon_lower < epsilon_lower_bound(0.9, 0.03, 1e-5)  # below the point estimate
    assert (result.tpr, result.fpr, result.confidence) == (0.9, 0.03, 0.95)
    assert "ε ≥" in str(result)


def _randomized_response_audit(epsilon: float, n: int, rng: np.random.Generator) -> float:
    """The optimal test against ε-DP randomized response: say "in" when the output bit is 1."""
    keep = math.exp(epsilon) / (1 + math.exp(epsilon))
    true_positives = int(rng.binomial(n, keep))
    false_positives = int(rng.binomial(n, 1 - keep))
    return audit_epsilon(true_positives, n, false_positives, n, delta=0.0, alpha=0.05).epsilon_lower


def test_the_false_positive_rate_is_at_most_alpha_against_randomized_response() -> None:
    """Play the attacker with the *best possible* test against a mechanism whose ε is exactly
    known: the bound may exceed the true ε in at most α of the audits. The control (point
    estimates instead of Clopper–Pearson) exceeds it about half the time, so the check has teeth."""
    rng = np.random.default_rng(0)
    epsilon, n, audits = 1.0, 400, 2000
    keep = math.exp(epsilon) / (1 + math.exp(epsilon))
    exceed = naive_exceed = 0
    for _ in range(audits):
        exceed += _randomized_response_audit(epsilon, n, rng) > epsilon
        tp, fp = rng.binomial(n, keep), rng.binomial(n, 1 - keep)
        naive_exceed += epsilon_lower_bound(tp / n, fp / n) > epsilon
    # at most α = 5%, with three binomial standard deviations of slack
    assert exceed / audits <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / audits)
    assert naive_exceed / audits > 0.3
    assert _randomized_response_audit(epsilon, 100_000, rng) > 0.9  # and it is nearly tight


def test_the_gaussian_mechanism_audit_never_exceeds_its_exact_epsilon() -> None:
    """Seeded audits of the Gaussian mechanism (sensitivity 1, σ = 1) with a threshold chosen on
    separate trials: the bound stays below the exact ε in at least 1 − α of them."""
    rng = np.random.default_rng(1)
    sigma, delta, trials, audits = 1.0, 1e-5, 3000, 60
    exact = gaussian_epsilon(sigma, delta)
    bounds = []
    for _ in range(audits):
        cut = choose_threshold(
            rng.normal(1, sigma, trials), rng.normal(0, sigma, trials), delta=delta
        )
        result = audit_scores(
            rng.normal(1, sigma, trials), rng.normal(0, sigma, trials), cut, delta=delta
        )
        bounds.append(result.epsilon_lower)
    assert sum(b > exact for b in bounds) <= 0.05 * audits
    assert np.median(bounds) > 0.5  # the attack does find leakage


def test_choose_threshold_finds_the_separating_score() -> None:
    in_scores, out_scores = np.arange(100, 200, dtype=float), np.arange(0, 100, dtype=float)
    cut = choose_threshold(in_scores, out_scores, delta=0.0)
    assert 99 < cut <= 100
    assert audit_scores(in_scores, out_scores, cut, delta=0.0).false_positives == 0
    many = np.random.default_rng(2).normal(size=50_000)
    assert math.isfinite(choose_threshold(many + 1, many, delta=1e-5, max_candidates=100))


# -- the Gaussian mechanism's exact ε and the posterior --------------------------------------------


@pytest.mark.parametrize("sigma", [0.5, 0.75, 1.0, 2.0, 5.0])
def test_gaussian_epsilon_inverts_the_exact_delta(sigma: float) -> None:
    eps = gaussian_epsilon(sigma, 1e-5)
    assert gaussian_delta(sigma, 1.0, eps) <= 1e-5
    assert gaussian_delta(sigma, 1.0, eps * (1 - 1e-9)) > 1e-5
    assert gaussian_epsilon(1000.0, 0.5) == 0.0  # already (0, δ)-DP


def test_max_posterior() -> None:
    assert max_posterior(0.5, math.log(3)) == pytest.approx(0.75)
    assert max_posterior(0.01, 1.0) == pytest.approx(math.e * 0.01 / (math.e * 0.01 + 0.99))
    assert max_posterior(0.0, 5.0) == 0.0 and max_posterior(1.0, 5.0) == 1.0
    assert max_posterior(1e-6, 700.0) == pytest.approx(1.0)  # no overflow


def test_with_delta_the_odds_bound_fails_more_often_than_delta() -> None:
    """max_posterior's docstring: for δ > 0 the odds bound is not "broken with probability ≤ δ".
    The Gaussian mechanism's privacy loss with the record in is N(μ²/2, μ²), μ = 1/σ; at σ = 0.75
    and δ = 1e-5 (exact ε ≈ 6.13) it exceeds ε with probability ≈ 4.2e-5 > δ."""
    sigma, delta = 0.75, 1e-5
    eps = gaussian_epsilon(sigma, delta)
    mu = 1 / sigma
    tail = float(stats.norm.sf((eps - mu**2 / 2) / mu))
    assert eps == pytest.approx(6.13, abs=0.005)
    assert tail == pytest.approx(4.24e-5, rel=0.01)
    assert tail > delta


# -- what finite samples can certify (lesson 22's ceilings) ---------------------------------------


def test_a_perfect_attack_on_300_trials_per_world_certifies_at_most_4_39() -> None:
    perfect = audit_epsilon(300, 300, 0, 300, delta=1e-5)
    assert perfect.epsilon_lower == pytest.approx(4.39, abs=0.005)
    assert perfect.epsilon_lower < gaussian_epsilon(0.75, 1e-5)  # below lesson 22's exact ε
    # and nothing better is possible with these sample sizes: every other count gives less
    assert audit_epsilon(299, 300, 0, 300, delta=1e-5).epsilon_lower < perfect.epsilon_lower
    assert audit_epsilon(300, 300, 1, 300, delta=1e-5).epsilon_lower < perfect.epsilon_lower


def test_the_one_run_audit_is_capped_below_the_gaussian_exact_epsilon() -> None:
    """Every guess right still leaves the bound below 6.13: the theorem's per-guess accuracy
    e^ε/(1 + e^ε) is randomized response's, not tight for the Gaussian at large ε."""
    exact = gaussian_epsilon(0.75, 1e-5)
    all_200 = one_run_epsilon_lower_bound(1000, 200, 200, delta=1e-5)
    all_1000 = one_run_epsilon_lower_bound(1000, 1000, 1000, delta=1e-5)
    assert all_200 == pytest.approx(4.17, abs=0.005)
    assert all_1000 == pytest.approx(5.78, abs=0.005)
    assert all_200 < all_1000 < exact


# -- the one-run audit -----------------------------------------------------------------------------


def _brute_force_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Theorem 3.1 literally, in exact rational arithmetic (q rounded once), max over i ≤ m."""
    q = Fraction(special.expit(epsilon))
    pmf = [math.comb(r, j) * q**j * (1 - q) ** (r - j) for j in range(r + 1)]

    def f(t: int) -> Fraction:  # P[Binomial(r, q) ≥ t]
        return sum(pmf[max(t, 0) :], Fraction(0))

    worst = max((f(v - i) - f(v)) / i for i in range(1, m + 1))
    return float(min(f(v) + 2 * m * Fraction(delta) * worst, Fraction(1)))


@pytest.mark.parametrize(
    ("m", "r", "v", "epsilon", "delta"),
    [
        (20, 10, 9, 1.0, 1e-3),
        (50, 30, 25, 0.5, 1e-4),
        (12, 12, 12, 3.0, 0.0),
        (30, 8, 0, 1.0, 0.01),
    ],
)
def test_one_run_p_value_matches_the_theorem(
    m: int, r: int, v: int, epsilon: float, delta: float
) -> None:
    want = _brute_force_p_value(m, r, v, epsilon, delta)
    assert one_run_p_value(m, r, v, epsilon, delta) == pytest.approx(want, rel=1e-9)


def test_one_run_bound_is_the_largest_rejected_epsilon() -> None:
    eps = one_run_epsilon_lower_bound(1000, 100, 100, delta=1e-5, alpha=0.05)
    # δ = 0 and all guesses right: q^r = α exactly, so ε = logit(α^(1/r))
    pure = one_run_epsilon_lower_bound(1000, 100, 100, delta=0.0, alpha=0.05)
    assert pure == pytest.approx(special.logit(0.05 ** (1 / 100)), rel=1e-9)
    assert 0 < eps < pure  # the δ term only weakens the bound
    assert one_run_p_value(1000, 100, 100, eps * 0.999, 1e-5) < 0.05
    assert one_run_p_value(1000, 100, 100, eps * 1.001, 1e-5) >= 0.05
    assert one_run_epsilon_lower_bound(1000, 100, 50, delta=1e-5) == 0.0  # chance level


def test_one_run_false_positive_rate_against_randomized_response() -> None:
    """m canaries, each in with probability ½, the mechanism ε-DP randomized response per canary
    (the worst case for the theorem): the bound exceeds ε in at most α of the runs."""
    rng = np.random.default_rng(3)
    epsilon, m, runs = 1.0, 200, 400
    keep = special.expit(epsilon)
    exceed = []
    for _ in range(runs):
        included = rng.random(m) < 0.5
        output = np.where(rng.random(m) < keep, included, ~included)
        scores = output + rng.random(m) * 1e-3  # ties broken at random
        result = one_run_audit(scores, included, guesses_in=50, guesses_out=50, delta=0.0)
        exceed.append(result.epsilon_lower > epsilon)
    assert np.mean(exceed) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)


def test_one_run_audit_counts_guesses() -> None:
    included = np.array([True, False, True, False, True, False])
    scores = np.array([5.0, 0.0, 4.0, 1.0, 2.0, 3.0])  # in: 5, 4; out: 0, 1 → 4 right of 4
    result = one_run_audit(scores, included, guesses_in=2, guesses_out=2, delta=0.0)
    assert (result.canaries, result.guesses, result.correct) == (6, 4, 4)
    wrong = one_run_audit(-scores, included, guesses_in=2, guesses_out=2, delta=0.0)
    assert wrong.correct == 0 and wrong.epsilon_lower == 0.0
    assert "4/4 guesses right on 6 canaries" in str(result)


def _one_run(included: list, guesses_in: int, guesses_out: int) -> object:
    return one_run_audit(
        [1.0, 2.0], included, guesses_in=guesses_in, guesses_out=guesses_out, delta=0.0
    )


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: clopper_pearson(3, 10, 0.0), ValueError),
        (lambda: clopper_pearson(3, 10, 1.0), ValueError),
        (lambda: clopper_pearson(3, 10, float("nan")), ValueError),
        (lambda: clopper_pearson(11, 10), ValueError),
        (lambda: clopper_pearson(3.0, 10), TypeError),
        (lambda: clopper_pearson(3, 10.5), TypeError),
        (lambda: clopper_pearson(True, 10), TypeError),
        (lambda: epsilon_lower_bound(1.2, 0.1), ValueError),
        (lambda: epsilon_lower_bound(0.5, -0.1), ValueError),
        (lambda: epsilon_lower_bound(float("nan"), 0.1), ValueError),
        (lambda: epsilon_lower_bound(0.5, 0.1, 1.0), ValueError),
        (lambda: audit_epsilon(5, 10, 2, 10, delta=1e-5, alpha=1.5), ValueError),
        (lambda: audit_epsilon(5, 10, 2.5, 10, delta=1e-5), TypeError),
        (lambda: audit_epsilon(5, 0, 2, 10, delta=1e-5), ValueError),
        (lambda: audit_scores([1.0, float("nan")], [0.0], 0.5, delta=0.0), ValueError),
        (lambda: audit_scores([[1.0]], [0.0], 0.5, delta=0.0), ValueError),
        (lambda: audit_scores(["a"], [0.0], 0.5, delta=0.0), TypeError),
        (lambda: choose_threshold([1.0], [0.0], delta=0.0, alpha=-0.1), ValueError),
        (lambda: one_run_p_value(10, 5, 3, float("nan"), 0.0), ValueError),
        (lambda: one_run_p_value(10, 5, 3, -1.0, 0.0), ValueError),
        (lambda: one_run_p_value(10, 11, 3, 1.0, 0.0), ValueError),
        (lambda: one_run_p_value(10, 5, 6, 1.0, 0.0), ValueError),
        (lambda: one_run_p_value(10, 5.0, 3, 1.0, 0.0), TypeError),
        (lambda: one_run_epsilon_lower_bound(10, 5, 3, delta=0.0, alpha=0.0), ValueError),
        (lambda: _one_run([1, 0], 1, 1), TypeError),
        (lambda: _one_run([True], 1, 0), ValueError),
        (lambda: _one_run([True, False], 2, 1), ValueError),
        (lambda: _one_run([True, False], -1, 1), ValueError),
        (lambda: gaussian_epsilon(0.0, 1e-5), ValueError),
        (lambda: gaussian_epsilon(1.0, 0.0), ValueError),
        (lambda: max_posterior(1.5, 1.0), ValueError),
        (lambda: max_posterior(0.5, float("nan")), ValueError),
        (lambda: max_posterior(0.5, 0.0), ValueError),
    ],
)  # fmt: skip
def test_bad_input_is_refused(call, error) -> None:
    with pytest.raises(error):
        call()
