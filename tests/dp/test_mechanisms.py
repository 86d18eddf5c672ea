"""Statistical and exact checks of course_lib.dp.mechanisms.

Every random test draws from ``InsecureSeededRandom`` with a fixed seed, so it gives the same result
on every run; the bounds are computed from the sample size at a stated confidence level (z = 3.29 is
the two-sided 99.9% normal quantile), not tuned to pass.
"""

import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from course_lib.dp.mechanisms import (
    debiased_estimate,
    discrete_gaussian_pmf,
    discrete_laplace_pmf,
    exponential_mechanism,
    exponential_mechanism_probabilities,
    gaussian_delta,
    gaussian_mechanism,
    gaussian_sigma_analytic,
    gaussian_sigma_classic,
    grid_spacing,
    laplace_mechanism,
    naive_laplace,
    naive_laplace_could_output,
    randomized_response,
    randomized_response_epsilon,
    randomized_response_std,
    sample_discrete_gaussian,
    sample_discrete_laplace,
    truth_probability_for_epsilon,
)
from course_lib.randomness import InsecureSeededRandom, RandomSource

Z = 3.29  # two-sided 99.9% normal quantile
ALPHA = 1e-3  # significance level of the goodness-of-fit tests


def chi_square_pvalue(samples: np.ndarray, pmf, reach: int) -> float:
    """Chi-square goodness of fit on the bins -reach..reach, with both tails pooled into one bin."""
    support = np.arange(-reach, reach + 1)
    observed = np.array([(samples == x).sum() for x in support] + [(np.abs(samples) > reach).sum()])
    probabilities = pmf(support)
    expected = len(samples) * np.append(probabilities, 1.0 - probabilities.sum())
    return stats.chisquare(observed, expected).pvalue


# -- exact discrete samplers -----------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.4, 2.5])
def test_discrete_laplace_matches_its_pmf(scale):
    samples = sample_discrete_laplace(scale, 20_000, rng=InsecureSeededRandom(1)).numpy()
    assert chi_square_pvalue(samples, lambda x: discrete_laplace_pmf(x, scale), 10) > ALPHA


def test_discrete_laplace_with_a_fractional_scale_has_the_right_variance():
    scale = Fraction(7, 3)
    samples = sample_discrete_laplace(scale, 20_000, rng=InsecureSeededRandom(2)).double()
    r = math.exp(-1 / float(scale))
    variance = 2 * r / (1 - r) ** 2  # the discrete Laplace's exact variance
    fourth_moment = 2 * r * (1 + 11 * r + 11 * r**2 + r**3) / (1 - r) ** 4
    n = len(samples)
    assert abs(samples.mean().item()) < Z * math.sqrt(variance / n)
    assert abs(samples.var().item() - variance) < Z * math.sqrt((fourth_moment - variance**2) / n)


@pytest.mark.parametrize("sigma", [0.8, 3.0])
def test_discrete_gaussian_matches_its_pmf(sigma):
    samples = sample_discrete_gaussian(sigma, 15_000, rng=InsecureSeededRandom(3)).numpy()
    assert chi_square_pvalue(samples, lambda x: discrete_gaussian_pmf(x, sigma), 8) > ALPHA


def test_samplers_are_reproducible_with_a_seed_and_vary_without():
    a = sample_discrete_laplace(3.0, 50, rng=InsecureSeededRandom(7))
    b = sample_discrete_laplace(3.0, 50, rng=InsecureSeededRandom(7))
    assert torch.equal(a, b)
    assert not torch.equal(sample_discrete_gaussian(5.0, 50), sample_discrete_gaussian(5.0, 50))
    assert a.shape == (50,) and a.dtype == torch.int64


# -- Laplace and Gaussian mechanisms ---------------------------------------------------------------


def discrete_laplace_variance(scale: float) -> float:
    r = math.exp(-1 / scale)
    return 2 * r / (1 - r) ** 2


def test_laplace_mechanism_mean_and_variance():
    value, sensitivity, epsilon, n = 10.0, 1.0, 0.5, 5_000
    rng = InsecureSeededRandom(4)
    outputs = torch.tensor(
        [laplace_mechanism(value, sensitivity, epsilon, rng=rng) for _ in range(n)]
    )
    grid = grid_spacing(sensitivity)
    grid_scale = (math.floor(sensitivity / grid) + 1) / epsilon  # noise scale in grid steps
    variance = grid**2 * discrete_laplace_variance(grid_scale)
    assert variance == pytest.approx(2 * (sensitivity / epsilon) ** 2, rel=3e-3)  # ≈ Laplace(b)
    assert abs(outputs.mean().item() - value) < Z * math.sqrt(variance / n)
    # Var of the sample variance is (μ4 - σ⁴)/n; the Laplace has μ4 = 6σ⁴.
    assert abs(outputs.var().item() - variance) < Z * math.sqrt(5 * variance**2 / n)


def test_laplace_mechanism_outputs_lie_on_the_grid_for_vectors():
    values = torch.tensor([0.3, -2.0, 7.25])
    out = laplace_mechanism(values, 2.0, 1.0, rng=InsecureSeededRandom(5))
    assert isinstance(out, torch.Tensor) and out.shape == (3,) and out.dtype == torch.float64
    steps = out / grid_spacing(2.0, 3)
    assert torch.equal(steps, torch.round(steps))
    assert isinstance(laplace_mechanism(3, 1.0, 1.0), float)


def test_gaussian_mechanism_mean_and_variance():
    value, sensitivity, epsilon, delta, n = -3.0, 2.0, 1.0, 1e-5, 3_000
    rng = InsecureSeededRandom(6)
    outputs = torch.tensor(
        [gaussian_mechanism(value, sensitivity, epsilon, delta, rng=rng) for _ in range(n)]
    )
    grid = grid_spacing(sensitivity, norm="l2")
    sigma = grid * gaussian_sigma_analytic(sensitivity / grid + 1, epsilon, delta)
    assert sigma == pytest.approx(gaussian_sigma_analytic(sensitivity, epsilon, delta), rel=2e-3)
    assert abs(outputs.mean().item() - value) < Z * sigma / math.sqrt(n)
    assert abs(outputs.var().item() - sigma**2) < Z * sigma**2 * math.sqrt(2 / n)


def test_classic_gaussian_mechanism_uses_the_textbook_sigma():
    rng = InsecureSeededRandom(8)
    outputs = torch.tensor(
        [gaussian_mechanism(0.0, 1.0, 0.5, 1e-5, analytic=False, rng=rng) for _ in range(2_000)]
    )
    sigma = math.sqrt(2 * math.log(1.25 / 1e-5)) / 0.5
    assert gaussian_sigma_classic(1.0, 0.5, 1e-5) == pytest.approx(sigma)
    assert abs(outputs.std().item() - sigma) < Z * sigma / math.sqrt(2 * 2_000) * 1.01


def hockey_stick_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """δ(ε) = ∫ max(0, p(x) - e^ε q(x)) dx for N(0, σ²) vs N(Δ, σ²), by numerical integration."""
    crossing = sensitivity / 2 - epsilon * sigma**2 / sensitivity  # p > e^ε q left of this point
    p = stats.norm(0, sigma)
    q = stats.norm(sensitivity, sigma)
    value, _ = integrate.quad(
        lambda x: p.pdf(x) - math.exp(epsilon) * q.pdf(x),
        crossing - 40 * sigma,
        crossing,
        epsabs=1e-14,
        epsrel=1e-10,
        limit=200,
    )
    return value


@pytest.mark.parametrize(("epsilon", "delta"), [(0.1, 1e-5), (1.0, 1e-5), (3.0, 1e-6), (8.0, 1e-3)])
def test_analytic_gaussian_is_tight_and_beats_the_classic_formula(epsilon, delta):
    sigma = gaussian_sigma_analytic(1.0, epsilon, delta)
    assert gaussian_delta(sigma, 1.0, epsilon) <= delta
    assert gaussian_delta(sigma * (1 - 1e-6), 1.0, epsilon) > delta  # the smallest safe σ
    assert hockey_stick_delta(sigma, 1.0, epsilon) == pytest.approx(delta, rel=1e-5)
    if epsilon < 1:
        assert sigma < gaussian_sigma_classic(1.0, epsilon, delta)


def test_analytic_gaussian_scales_with_sensitivity():
    assert gaussian_sigma_analytic(5.0, 1.0, 1e-5) == pytest.approx(
        5 * gaussian_sigma_analytic(1.0, 1.0, 1e-5), rel=1e-9
    )


def test_discrete_gaussian_on_the_grid_is_as_private_as_claimed():
    # Canonne-Kamath-Steinke Thm 7: for integer sensitivity Δ, the discrete Gaussian's exact δ is
    # Σ_y max(0, P[y] - e^ε P[y - Δ]). Check it at the σ the mechanism uses (in grid steps).
    sensitivity, epsilon, delta = 1.0, 1.0, 1e-5
    grid = grid_spacing(sensitivity, norm="l2")
    step_sensitivity = int(sensitivity / grid) + 1
    sigma = gaussian_sigma_analytic(sensitivity / grid + 1, epsilon, delta)
    reach = int(40 * sigma)
    y = np.arange(-reach, reach + 1, dtype=np.float64)
    log_p = -(y**2) / (2 * sigma**2)
    log_q = -((y - step_sensitivity) ** 2) / (2 * sigma**2)
    normaliser = np.exp(log_p).sum()
    exact_delta = np.clip(np.exp(log_p) - np.exp(epsilon + log_q), 0, None).sum() / normaliser
    assert exact_delta <= delta * (1 + 1e-9)


# -- randomized response ---------------------------------------------------------------------------


def test_two_coin_protocol_has_epsilon_ln3():
    assert randomized_response_epsilon(0.5) == pytest.approx(math.log(3))


@settings(deadline=None, max_examples=50)
@given(st.floats(min_value=1e-3, max_value=20))
def test_truth_probability_inverts_the_epsilon_formula(epsilon):
    assert randomized_response_epsilon(truth_probability_for_epsilon(epsilon)) == pytest.approx(
        epsilon, rel=1e-6
    )


def test_randomized_response_answer_frequencies():
    n = 40_000
    yes = randomized_response(torch.ones(n, dtype=torch.bool), rng=InsecureSeededRandom(9))
    no = randomized_response(torch.zeros(n, dtype=torch.int64), rng=InsecureSeededRandom(10))
    half_width = Z * math.sqrt(0.75 * 0.25 / n)
    assert abs(yes.double().mean().item() - 0.75) < half_width
    assert abs(no.double().mean().item() - 0.25) < half_width


@pytest.mark.parametrize(("p_truth", "fraction"), [(0.5, 0.3), (0.2, 0.7), (0.9, 0.05)])
def test_debiased_estimate_is_unbiased(p_truth, fraction):
    n, trials = 2_000, 200
    rng = InsecureSeededRandom(11)
    truth = torch.arange(n) < int(fraction * n)  # exactly fraction·n people say yes
    estimates = torch.tensor(
        [
            debiased_estimate(randomized_response(truth, p_truth=p_truth, rng=rng), p_truth)
            for _ in range(trials)
        ],
        dtype=torch.float64,
    )
    std = randomized_response_std(n, p_truth)
    assert abs(estimates.mean().item() - fraction) < Z * std / math.sqrt(trials)
    # the predicted spread is right too (sample std of 200 normal-ish draws, ±Z/√(2·200))
    assert abs(estimates.std().item() / std - 1) < Z / math.sqrt(2 * trials)


def test_randomized_response_std_follows_the_one_integer_rule():
    """Issue 23 §5: ``randomized_response_std(np.int64(100))`` was refused; bools are not counts."""
    assert randomized_response_std(np.int64(100)) == randomized_response_std(100)
    assert randomized_response_std(100) == pytest.approx(math.sqrt(0.75) / 10)  # √(1-p²)/(p√n)
    for bad in (True, np.bool_(True), 100.0):
        with pytest.raises(TypeError, match="n"):
            randomized_response_std(bad)


# -- exponential mechanism -------------------------------------------------------------------------


def test_exponential_mechanism_frequencies_match_its_probabilities():
    scores = [3.0, 1.0, 0.0, 2.5]
    probabilities = exponential_mechanism_probabilities(scores, 1.0, 1.0)
    rng = InsecureSeededRandom(12)
    picks = np.array(
        [
            exponential_mechanism(scores, 1.0, 1.0, candidates=range(4), rng=rng)
            for _ in range(10_000)
        ]
    )
    observed = np.bincount(picks, minlength=4)
    assert stats.chisquare(observed, 10_000 * probabilities.numpy()).pvalue > ALPHA


@settings(deadline=None, max_examples=60)
@given(
    st.lists(st.floats(-10, 10), min_size=2, max_size=6),
    st.data(),
    st.floats(0.05, 5),
)
def test_exponential_mechanism_probability_ratio_is_at_most_e_to_epsilon(scores, data, epsilon):
    # a neighbouring database moves every score by at most the sensitivity (here 1)
    shifts = data.draw(st.lists(st.floats(-1, 1), min_size=len(scores), max_size=len(scores)))
    p = exponential_mechanism_probabilities(scores, 1.0, epsilon)
    q = exponential_mechanism_probabilities(
        [s + d for s, d in zip(scores, shifts, strict=True)], 1.0, epsilon
    )
    assert (p / q).max().item() <= math.exp(epsilon) * (1 + 1e-9)


# -- empirical DP audit of the Laplace mechanism ---------------------------------------------------


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    low = stats.beta.ppf(alpha / 2, successes, trials - successes + 1) if successes else 0.0
    high = (
        stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes)
        if successes < trials
        else 1.0
    )
    return low, high


def audited_epsilon(
    outputs_d: np.ndarray, outputs_d_prime: np.ndarray, edges, alpha: float
) -> float:
    """A lower confidence bound on the privacy loss, maximised over histogram bins (both ways).

    For each bin B, ln(P[M(D) ∈ B] / P[M(D') ∈ B]) ≤ ε for an ε-DP mechanism; with Clopper-Pearson
    intervals (Bonferroni-corrected over bins and directions) the bound holds with probability
    ≥ 1 - alpha, so a correct mechanism fails this test with probability ≤ alpha.
    """
    counts_d, _ = np.histogram(outputs_d, edges)
    counts_dp, _ = np.histogram(outputs_d_prime, edges)
    per_test = alpha / (2 * len(counts_d))
    n, n_prime = len(outputs_d), len(outputs_d_prime)
    best = 0.0
    for a, b in zip(counts_d, counts_dp, strict=True):
        a_low, a_high = clopper_pearson(int(a), n, per_test)
        b_low, b_high = clopper_pearson(int(b), n_prime, per_test)
        if a_low > 0 and b_high > 0:
            best = max(best, math.log(a_low / b_high))
        if b_low > 0 and a_high > 0:
            best = max(best, math.log(b_low / a_high))
    return best


AUDIT_EDGES = [-np.inf, *np.arange(-4.0, 5.5, 0.5), np.inf]


@pytest.fixture(scope="module")
def laplace_outputs_on_neighbours():
    """Counting query on neighbouring databases: true answers 0 and 1 (sensitivity 1), ε = 1."""
    rng = InsecureSeededRandom(13)
    n = 15_000
    d = np.array([laplace_mechanism(0.0, 1.0, 1.0, rng=rng) for _ in range(n)])
    d_prime = np.array([laplace_mechanism(1.0, 1.0, 1.0, rng=rng) for _ in range(n)])
    return d, d_prime


def test_laplace_mechanism_passes_an_empirical_privacy_audit(laplace_outputs_on_neighbours):
    d, d_prime = laplace_outputs_on_neighbours
    observed = audited_epsilon(d, d_prime, AUDIT_EDGES, alpha=1e-3)
    assert observed <= 1.0  # with 99.9% confidence, never more privacy loss than ε
    assert observed > 0.7  # and the audit is sharp enough to see most of the ε that is spent


def test_the_audit_catches_a_mechanism_with_too_little_noise():
    rng = InsecureSeededRandom(14)
    # claims ε = 1 but adds the noise of ε = 2
    d = np.array([laplace_mechanism(0.0, 1.0, 2.0, rng=rng) for _ in range(5_000)])
    d_prime = np.array([laplace_mechanism(1.0, 1.0, 2.0, rng=rng) for _ in range(5_000)])
    assert audited_epsilon(d, d_prime, AUDIT_EDGES, alpha=1e-3) > 1.0


# -- the floating-point attack ---------------------------------------------------------------------


def test_floating_point_attack_on_naive_laplace():
    outputs = naive_laplace(0.0, 1.0, 1.0, 20_000, rng=InsecureSeededRandom(15))
    # the attacker's test never rules out the true answer ...
    assert naive_laplace_could_output(outputs, 0.0, 1.0, 1.0).all()
    # ... and rules out the neighbouring answer for most outputs: certain identification.
    assert (~naive_laplace_could_output(outputs, 1.0, 1.0, 1.0)).mean() > 0.5
    shifted = naive_laplace(1.0, 1.0, 1.0, 20_000, rng=InsecureSeededRandom(16))
    assert naive_laplace_could_output(shifted, 1.0, 1.0, 1.0).all()


@pytest.mark.parametrize(
    ("value", "sensitivity", "epsilon"),
    [(5.0, 1.0, 2.0), (-3.0, 2.0, 0.5), (1e6, 1.0, 1.0), (-1e12, 0.5, 1.0), (1e300, 1.0, 1.0)],
)
def test_the_attack_never_rules_out_the_truth(value, sensitivity, epsilon):
    outputs = naive_laplace(value, sensitivity, epsilon, 20_000, rng=InsecureSeededRandom(18))
    assert naive_laplace_could_output(outputs, value, sensitivity, epsilon).all()


def test_naive_laplace_has_the_laplace_distribution():
    # the attack works although the textbook sampler has the right distribution
    outputs = naive_laplace(2.0, 1.0, 0.5, 20_000, rng=InsecureSeededRandom(17))
    assert stats.kstest(outputs, stats.laplace(loc=2.0, scale=2.0).cdf).pvalue > ALPHA


def test_grid_mechanism_outputs_share_one_support(laplace_outputs_on_neighbours):
    d, d_prime = laplace_outputs_on_neighbours
    grid = grid_spacing(1.0)
    for outputs in (d, d_prime):
        assert np.array_equal(outputs / grid, np.round(outputs / grid))
    # every grid point is reachable from both answers, so membership says nothing
    assert len(np.intersect1d(d, d_prime)) > 0.5 * len(np.unique(d))


# -- bad input -------------------------------------------------------------------------------------


BAD_EPSILONS = [0.0, -1.0, math.nan, math.inf]


@pytest.mark.parametrize("epsilon", BAD_EPSILONS)
def test_bad_epsilon_is_refused(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        laplace_mechanism(1.0, 1.0, epsilon)
    with pytest.raises(ValueError, match="epsilon"):
        gaussian_mechanism(1.0, 1.0, epsilon, 1e-5)
    with pytest.raises(ValueError, match="epsilon"):
        exponential_mechanism([1.0, 2.0], 1.0, epsilon, candidates=(0, 1))
    with pytest.raises(ValueError, match="epsilon"):
        truth_probability_for_epsilon(epsilon)


@pytest.mark.parametrize("delta", [0.0, 1.0, 1.5, -1e-5, math.nan])
def test_bad_delta_is_refused(delta):
    with pytest.raises(ValueError, match="delta"):
        gaussian_mechanism(1.0, 1.0, 1.0, delta)
    with pytest.raises(ValueError, match="delta"):
        gaussian_sigma_analytic(1.0, 1.0, delta)


@pytest.mark.parametrize("sensitivity", [-1.0, 0.0, math.nan, math.inf])
def test_bad_sensitivity_is_refused(sensitivity):
    with pytest.raises(ValueError, match="sensitivity"):
        laplace_mechanism(1.0, sensitivity, 1.0)
    with pytest.raises(ValueError, match="sensitivity"):
        gaussian_sigma_classic(sensitivity, 0.5, 1e-5)


@pytest.mark.parametrize("value", [math.nan, math.inf, [1.0, math.nan]])
def test_non_finite_answers_are_refused(value):
    with pytest.raises(ValueError, match="NaN or infinity"):
        laplace_mechanism(value, 1.0, 1.0)


def test_one_element_tensors_count_as_numbers():
    rng = InsecureSeededRandom(19)
    assert isinstance(laplace_mechanism(1.0, torch.tensor(1.0), torch.tensor(0.5), rng=rng), float)
    with pytest.raises(ValueError, match="epsilon"):
        laplace_mechanism(1.0, 1.0, torch.tensor(-0.5))
    with pytest.raises(TypeError, match="epsilon must be a number"):
        laplace_mechanism(1.0, 1.0, "0.5")


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="only proven for epsilon < 1"):
        gaussian_sigma_classic(1.0, 2.0, 1e-5)
    with pytest.raises(ValueError, match="p_truth"):
        randomized_response([1, 0], p_truth=1.0)
    with pytest.raises(ValueError, match="yes/no"):
        randomized_response([1, 2])
    with pytest.raises(ValueError, match="too large for the privacy grid"):
        laplace_mechanism(1e300, 1.0, 1.0)
    with pytest.raises(TypeError, match="rng"):
        laplace_mechanism(1.0, 1.0, 1.0, rng=np.random.default_rng(0))


def test_the_attack_finishes_for_large_answers_and_still_works_where_it_can():
    # The old search tried 2·|value|/b + 7 candidates per output: for value = 1e15 that never ends.
    # Run it in a child process so that a regression fails the test instead of hanging the suite.
    code = (
        "from course_lib.dp.mechanisms import naive_laplace, naive_laplace_could_output as c\n"
        "from course_lib.randomness import InsecureSeededRandom as R\n"
        "o = naive_laplace(1e15, 1.0, 1.0, 1000, rng=R(3))\n"
        "print(int(c(o, 1e15, 1.0, 1.0).sum()), int(c(o, 1e15 + 4, 1.0, 1.0).sum()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    truth, neighbour = map(int, done.stdout.split())
    assert truth == 1000  # the truth is never ruled out
    # |value| ≫ b: the output's ulp (0.125) is far coarser than the noise grid, every float near
    # the answer is reachable, and the neighbour cannot be ruled out either
    assert neighbour == 1000
    # at |value| = 10 b the grid still shows: about one output in ten rules out value + 1
    outputs = naive_laplace(10.0, 1.0, 1.0, 5_000, rng=InsecureSeededRandom(4))
    assert (~naive_laplace_could_output(outputs, 11.0, 1.0, 1.0)).mean() > 0.05


def test_an_output_far_from_the_answer_is_ruled_out():
    # beyond the largest noise the sampler can draw (52·ln 2·b ≈ 36b) nothing is reachable
    assert not naive_laplace_could_output(np.array([40.0, -40.0]), 0.0, 1.0, 1.0).any()


@pytest.mark.parametrize("delta", [np.float32(1e-5), torch.tensor(1e-5), np.float64(1e-5)])
def test_numpy_and_tensor_deltas_are_accepted_everywhere(delta):
    assert gaussian_sigma_analytic(1.0, 1.0, delta) == pytest.approx(
        gaussian_sigma_analytic(1.0, 1.0, 1e-5), rel=1e-6
    )
    assert isinstance(gaussian_mechanism(1.0, 1.0, 1.0, delta, rng=InsecureSeededRandom(0)), float)


# -- group privacy and bounded contributions (lessons 05 and 06) ----------------------------------


def test_group_privacy_is_tight_for_randomized_response():
    # k people who all change their answer: the probability of the all-"yes" outcome changes by
    # exactly ((1+p)/(1-p))^k = e^{kε} — the bound k·ε of group privacy is attained, not loose
    for p, k in [(0.5, 1), (0.5, 3), (0.8, 4)]:
        yes_if_yes, yes_if_no = (1 + p) / 2, (1 - p) / 2
        ratio = (yes_if_yes / yes_if_no) ** k
        assert math.log(ratio) == pytest.approx(k * randomized_response_epsilon(p), rel=1e-12)


def test_group_privacy_exercise(capsys):
    from course_lib.exercises import check

    assert check("05.group_privacy", lambda p, k: k * math.log((1 + p) / (1 - p)))
    for wrong in (
        lambda p, k: math.log((1 + p) / (1 - p)),  # forgot the group
        lambda p, k: math.sqrt(k) * math.log((1 + p) / (1 - p)),  # composition-style √k
        lambda p, k: math.log((1 + p) / (1 - p)) ** k,
    ):
        assert not check("05.group_privacy", wrong)
    assert "group_epsilon(0.5, 4)" in capsys.readouterr().out


def test_bounded_sum_exercise(capsys):
    from course_lib.exercises import check

    assert check("06.bounded_sum", lambda v, b: v.clamp(0, b).sum())
    assert check("06.bounded_sum", lambda v, b: float(np.clip(v.numpy(), 0, b).sum()))
    for wrong in (
        lambda v, b: v.sum(),  # no clipping: one outlier moves the sum without limit
        lambda v, b: v.clamp(max=b).sum(),  # forgot the lower end: -1e12 moves it
        lambda v, b: v.sum().clamp(0, b),  # clips the total, not each person
    ):
        assert not check("06.bounded_sum", wrong)
    assert "bound" in capsys.readouterr().out


def test_clipping_makes_the_sum_sensitivity_the_bound():
    # brute force over neighbours that add one arbitrary person: clipped sums move by ≤ B, raw
    # sums by as much as the person wants
    base, bound = torch.tensor([3.0, 8.0, 1.0]), 10.0
    for extreme in (1e12, -1e12, 7.0, 0.0):
        with_them = torch.cat([base, torch.tensor([extreme])])
        assert abs(with_them.clamp(0, bound).sum() - base.clamp(0, bound).sum()) <= bound
    assert abs(torch.tensor([3.0, 8.0, 1.0, 1e12]).sum() - base.sum()) > 1e11


# -- the small print of lesson 06: what the exact samplers and the exponential mechanism don't do --


class _AllOnes(RandomSource):
    """An adversarially lucky source: every uniform is the largest one, 1 - 2^-53."""

    def bytes(self, n):
        return b"\xff" * n


def _realised_last_probability(scores):
    # exactly what exponential_mechanism does: float64 softmax, cumulative sum, 53-bit uniform u;
    # the last of two candidates is chosen when u ≥ c₀, i.e. for 2^53 - ⌈c₀·2^53⌉ of the 2^53 u's
    c0 = float(torch.cumsum(exponential_mechanism_probabilities(scores, 1.0, 1.0), 0)[0])
    return (2**53 - math.ceil(c0 * 2**53)) / 2**53


def test_the_floating_point_exponential_mechanism_is_not_exactly_epsilon_dp():
    # neighbouring databases: candidate 0's score moves by the sensitivity 1
    d, d_prime = torch.tensor([74.19, 0.0]), torch.tensor([73.19, 0.0])
    exact = [math.exp(-s / 2) / (1 + math.exp(-s / 2)) for s in (74.19, 73.19)]
    assert exact[1] / exact[0] == pytest.approx(math.exp(0.5))  # the math is ε-DP ...
    assert _realised_last_probability(d) == 0.0  # ... the implementation never picks it on D
    assert _realised_last_probability(d_prime) == 2.0**-52  # ... but can on D': ratio ∞
    assert exponential_mechanism(d, 1.0, 1.0, candidates=(0, 1), rng=_AllOnes()) == 0
    assert exponential_mechanism(d_prime, 1.0, 1.0, candidates=(0, 1), rng=_AllOnes()) == 1


def test_exact_samplers_use_more_randomness_for_larger_outputs():
    # the timing side channel: the work of a discrete-Laplace draw grows with |output|
    from course_lib.dp.mechanisms import _RandomBits

    bits = _RandomBits(InsecureSeededRandom(7))
    used, outputs = [], []
    for _ in range(4_000):
        before = bits.bits_used
        outputs.append(abs(bits.discrete_laplace(Fraction(3))))
        used.append(bits.bits_used - before)
    used, outputs = np.array(used), np.array(outputs)
    small, large = used[outputs <= 1], used[outputs >= 8]
    standard_error = math.sqrt(small.var() / len(small) + large.var() / len(large))
    assert large.mean() - small.mean() > 5 * standard_error
    assert np.corrcoef(outputs, used)[0, 1] > 0.3


DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_mechanisms_answer_on_the_device_of_their_input(device):
    rng = InsecureSeededRandom(3)
    answers = torch.tensor([True, False, True], device=device)
    assert randomized_response(answers, rng=rng).device.type == device
    values = torch.tensor([1.0, 2.0], device=device)
    assert laplace_mechanism(values, 1.0, 1.0, rng=rng).device.type == device
    assert gaussian_mechanism(values, 1.0, 1.0, 1e-5, rng=rng).device.type == device
    assert exponential_mechanism(values, 1.0, 1.0, candidates=("a", "b"), rng=rng) in ("a", "b")
