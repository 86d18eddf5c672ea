"""Auditing differential privacy: an empirical *lower* bound on ε from an attack (lesson 22).

An accountant (:mod:`course_lib.dp.accounting`) proves an *upper* bound: "this training run is
(ε, δ)-DP". An audit runs an attack and turns what it achieved into a *lower* bound: "no mechanism
this attack succeeded against can be better than (ε_lower, δ)-DP". If the lower bound exceeds the
claimed ε, the implementation (or its analysis) is wrong. If it does not, nothing is proved: the
attack may simply be weak.

**The hypothesis-testing view** (Kairouz, Oh & Viswanath 2015, "The composition theorem for
differential privacy", Thm. 2.1; Wasserman & Zhou 2010). A mechanism M is (ε, δ)-DP if and only if
every test that tries to tell M(D) from M(D') — D and D' neighbours — has

    TPR ≤ e^ε · FPR + δ     and     1 − FPR ≤ e^ε · (1 − TPR) + δ,

so a test that reaches (TPR, FPR) proves ε ≥ max(ln((TPR − δ) / FPR), ln((1 − FPR − δ) /
(1 − TPR))) (Jagielski, Ullman & Oprea 2020, "Auditing differentially private machine learning:
how private is private SGD?"; Nasr et al. 2021, "Adversary instantiation"). TPR and FPR are only
*estimated* from finitely many trials, so the audit uses the Clopper–Pearson interval's lower end
for TPR and upper end for FPR.

**One training run** (Steinke, Nasr & Jagielski 2023, "Privacy auditing with one (1) training
run", NeurIPS 2023, arXiv:2305.08846, Theorem 3.1 and their Appendix D code): m canaries, each
included independently with probability ½; the auditor guesses in/out for r of them (abstaining on
the rest) and gets v right. For an (ε, δ)-DP mechanism, P[v or more right] ≤ f(v) + 2mδ ·
max_{1 ≤ i ≤ v} (f(v − i) − f(v)) / i with f(v) = P[Binomial(r, e^ε / (1 + e^ε)) ≥ v]; every ε
whose bound is below α is rejected at confidence 1 − α.

The confidence level: with probability *at least* 1 − α, over the audit's own randomness, a
correct (ε, δ)-DP implementation is *not* flagged — so when the true ε is at most the claimed ε,
the audit's false-positive rate is *at most* α. (Clopper–Pearson intervals and the union bound
over the two rates are conservative, so the real rate can be well below α; this needs a test
fixed before the counted trials are seen, e.g. a threshold chosen on separate trials.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from course_lib.dp.mechanisms import gaussian_delta
from course_lib.validation import (
    as_number,
    check_delta,
    check_epsilon,
    check_int_in_range,
    check_nonnegative,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
)

__all__ = [
    "AuditResult",
    "OneRunResult",
    "audit_epsilon",
    "audit_scores",
    "choose_threshold",
    "clopper_pearson",
    "epsilon_lower_bound",
    "gaussian_epsilon",
    "max_posterior",
    "one_run_audit",
    "one_run_epsilon_lower_bound",
    "one_run_p_value",
]

#: Bisection steps of :func:`one_run_epsilon_lower_bound` and :func:`gaussian_epsilon`.
_BISECTION_STEPS = 60
#: The largest ε the one-run search tries before answering ``math.inf``.
_EPSILON_CEILING = 1e3

Scores = Sequence[float] | npt.NDArray[np.floating]


def _check_alpha(alpha: object) -> float:
    number = as_number(alpha, "alpha")
    if not 0.0 < number < 1.0:
        raise ValueError(
            "alpha is 1 − confidence (it bounds the audit's false-positive rate), strictly "
            f"between 0 and 1 (e.g. 0.05 for 95% confidence), got {number}"
        )
    return number


def _check_rate(value: object, name: str) -> float:
    number = as_number(value, name)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} is a rate and must lie in [0, 1], got {number}")
    return number


def _cp_ends(
    successes: npt.NDArray[np.int64], trials: int, alpha: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Vectorised Clopper–Pearson ends (inputs already checked)."""
    k = successes.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k == 0, 0.0, stats.beta.ppf(alpha / 2, k, trials - k + 1))
        high = np.where(k == trials, 1.0, stats.beta.ppf(1 - alpha / 2, k + 1, trials - k))
    return low.astype(np.float64), high.astype(np.float64)


def clopper_pearson(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """The exact (Clopper–Pearson 1934) two-sided confidence interval for a binomial proportion.

    ``successes`` out of ``trials`` (integers, 0 ≤ successes ≤ trials, trials ≥ 1). Returns
    ``(low, high)`` with P[p < low] ≤ α/2 and P[p > high] ≤ α/2 for every true proportion p:

        low = Beta(α/2; k, n − k + 1) quantile (0 when k = 0),
        high = Beta(1 − α/2; k + 1, n − k) quantile (1 when k = n).

    Same interval as ``scipy.stats.binomtest(k, n).proportion_ci(1 - alpha, method="exact")``.
    ``ValueError`` for counts out of range or α outside (0, 1); ``TypeError`` for non-integers.
    """
    trials = check_positive_int(trials, "trials")
    successes = check_int_in_range(successes, "successes", 0, trials)
    alpha = _check_alpha(alpha)
    low, high = _cp_ends(np.array([successes], dtype=np.int64), trials, alpha)
    return float(low[0]), float(high[0])


def _lower_bounds(
    tpr: npt.NDArray[np.float64], fpr: npt.NDArray[np.float64], delta: float
) -> npt.NDArray[np.float64]:
    """Vectorised :func:`epsilon_lower_bound` (inputs already checked)."""
    best = np.zeros_like(tpr)
    for hits, misses in ((tpr - delta, fpr), (1.0 - fpr - delta, 1.0 - tpr)):
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = np.where(hits <= 0, 0.0, np.where(misses <= 0, np.inf, np.log(hits / misses)))
        best = np.maximum(best, bound)
    return best


def epsilon_lower_bound(tpr: float, fpr: float, delta: float = 0.0) -> float:
    """The smallest ε an attack with true-positive rate ``tpr`` and false-positive rate ``fpr``
    is consistent with, for a mechanism claimed (ε, ``delta``)-DP:

        max(0, ln((TPR − δ) / FPR), ln((1 − FPR − δ) / (1 − TPR)))

    (the two inequalities of the hypothesis-testing view, module docstring; a logarithm whose
    numerator is ≤ 0 rules nothing out and is skipped). Rates lie in [0, 1], δ in [0, 1). Pass
    the Clopper–Pearson *lower* end for ``tpr`` and *upper* end for ``fpr`` to get a bound that
    holds at their confidence. Returns ``math.inf`` when the rates are impossible for every
    finite ε (FPR = 0 < TPR − δ, or TPR = 1 > FPR + δ).
    """
    tpr, fpr = _check_rate(tpr, "tpr"), _check_rate(fpr, "fpr")
    delta = check_delta(delta, allow_zero=True)
    return float(_lower_bounds(np.array([tpr]), np.array([fpr]), delta)[0])


@dataclass(frozen=True)
class AuditResult:
    """An audit's counts, their Clopper–Pearson intervals and the lower bound on ε.

    ``confidence`` = 1 − α: the bound ``epsilon_lower`` holds with at least this probability
    (α/2 for each of the two intervals' used ends, joined by the union bound).
    """

    true_positives: int
    positives: int
    false_positives: int
    negatives: int
    tpr_ci: tuple[float, float]
    fpr_ci: tuple[float, float]
    delta: float
    confidence: float
    epsilon_lower: float

    @property
    def tpr(self) -> float:
        """The observed true-positive rate."""
        return self.true_positives / self.positives

    @property
    def fpr(self) -> float:
        """The observed false-positive rate."""
        return self.false_positives / self.negatives

    def __str__(self) -> str:
        return (
            f"TPR {self.tpr:.3f} [{self.tpr_ci[0]:.3f}, {self.tpr_ci[1]:.3f}], "
            f"FPR {self.fpr:.4f} [{self.fpr_ci[0]:.4f}, {self.fpr_ci[1]:.4f}] → "
            f"ε ≥ {self.epsilon_lower:.2f} (δ = {self.delta:g}, {self.confidence:.0%} confidence)"
        )


def audit_epsilon(
    true_positives: int,
    positives: int,
    false_positives: int,
    negatives: int,
    *,
    delta: float,
    alpha: float = 0.05,
) -> AuditResult:
    """Lower-bound ε from an attack's counts (Jagielski, Ullman & Oprea 2020, Sec. 3).

    ``positives`` trials ran with the canary (the attack said "in" ``true_positives`` times),
    ``negatives`` without it (it said "in" ``false_positives`` times). Each rate gets the two-sided
    Clopper–Pearson interval at 1 − α, whose lower (upper) end fails with probability ≤ α/2; only
    the TPR's lower end and the FPR's upper end are used, so both hold together with probability
    ≥ 1 − α (union bound), and so does the bound ε ≥ ``epsilon_lower`` =
    :func:`epsilon_lower_bound` (TPR lower end, FPR upper end, δ).
    """
    positives = check_positive_int(positives, "positives")
    negatives = check_positive_int(negatives, "negatives")
    true_positives = check_int_in_range(true_positives, "true_positives", 0, positives)
    false_positives = check_int_in_range(false_positives, "false_positives", 0, negatives)
    delta = check_delta(delta, allow_zero=True)
    alpha = _check_alpha(alpha)
    tpr_ci = clopper_pearson(true_positives, positives, alpha)
    fpr_ci = clopper_pearson(false_positives, negatives, alpha)
    return AuditResult(
        true_positives,
        positives,
        false_positives,
        negatives,
        tpr_ci,
        fpr_ci,
        delta,
        1.0 - alpha,
        epsilon_lower_bound(tpr_ci[0], fpr_ci[1], delta),
    )


def _scores(values: Scores, name: str) -> npt.NDArray[np.float64]:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be an array of numbers: {error}") from None
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of scores, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or ±∞")
    return array


def audit_scores(
    in_scores: Scores,
    out_scores: Scores,
    threshold: float,
    *,
    delta: float,
    alpha: float = 0.05,
) -> AuditResult:
    """:func:`audit_epsilon` for the test "say *in* when the score is ≥ ``threshold``".

    ``in_scores`` (shape (P,)) come from trials with the canary, ``out_scores`` (shape (N,))
    from trials without it; higher means "more likely in". The threshold must be fixed *before*
    these scores are seen (e.g. with :func:`choose_threshold` on other trials): choosing it on
    the same scores would make the confidence level false.
    """
    in_array, out_array = _scores(in_scores, "in_scores"), _scores(out_scores, "out_scores")
    threshold = as_number(threshold, "threshold")
    return audit_epsilon(
        int((in_array >= threshold).sum()),
        in_array.size,
        int((out_array >= threshold).sum()),
        out_array.size,
        delta=delta,
        alpha=alpha,
    )


def choose_threshold(
    in_scores: Scores,
    out_scores: Scores,
    *,
    delta: float,
    alpha: float = 0.05,
    max_candidates: int = 2000,
) -> float:
    """The threshold whose :func:`audit_scores` bound is largest on *these* scores — use it on
    fresh trials, never on the ones it was chosen from.

    Candidates are the scores themselves, thinned to at most ``max_candidates`` evenly spaced
    quantiles of the pooled scores (plus the largest in-score). Ties go to the higher threshold.
    Shapes as in :func:`audit_scores`.
    """
    in_array, out_array = _scores(in_scores, "in_scores"), _scores(out_scores, "out_scores")
    delta = check_delta(delta, allow_zero=True)
    alpha = _check_alpha(alpha)
    max_candidates = check_positive_int(max_candidates, "max_candidates")
    candidates = np.unique(np.concatenate([in_array, out_array]))
    if candidates.size > max_candidates:
        picks = np.linspace(0, candidates.size - 1, max_candidates).round().astype(np.int64)
        candidates = np.unique(np.append(candidates[picks], in_array.max()))
    in_sorted, out_sorted = np.sort(in_array), np.sort(out_array)
    true_pos = in_array.size - np.searchsorted(in_sorted, candidates, side="left")
    false_pos = out_array.size - np.searchsorted(out_sorted, candidates, side="left")
    tpr_low, _ = _cp_ends(true_pos.astype(np.int64), in_array.size, alpha)
    _, fpr_high = _cp_ends(false_pos.astype(np.int64), out_array.size, alpha)
    bounds = _lower_bounds(tpr_low, fpr_high, delta)
    best = np.flatnonzero(bounds == bounds.max())[-1]  # ties: the highest threshold
    return float(candidates[best])


def one_run_p_value(
    canaries: int, guesses: int, correct: int, epsilon: float, delta: float
) -> float:
    """P[``correct`` or more right guesses] bounded for an (ε, δ)-DP mechanism, one-run audit.

    Steinke, Nasr & Jagielski (2023), Theorem 3.1, as their Appendix D code evaluates it: with
    q = e^ε / (1 + e^ε) and f(v) = P[Binomial(r, q) ≥ v],

        p = f(v) + 2·m·δ · max_{1 ≤ i ≤ v} (f(v − i) − f(v)) / i     (capped at 1),

    for m = ``canaries`` (each included independently with probability ½), r = ``guesses``
    (non-abstentions, r ≤ m) and v = ``correct`` (v ≤ r). ε ≥ 0, δ ∈ [0, 1). (The theorem takes
    the maximum over 1 ≤ i ≤ m; for i > v the ratio is (1 − f(v)) / i, below its value at i = v.)
    """
    canaries = check_positive_int(canaries, "canaries")
    guesses = check_int_in_range(guesses, "guesses", 0, canaries)
    correct = check_int_in_range(correct, "correct", 0, guesses)
    epsilon = check_nonnegative(epsilon, "epsilon")
    delta = check_delta(delta, allow_zero=True)
    q = float(special.expit(epsilon))  # the accuracy of ε-DP randomized response
    tail = float(stats.binom.sf(correct - 1, guesses, q))  # f(v) = P[Binomial(r, q) ≥ v]
    if delta == 0.0 or correct == 0:
        return min(tail, 1.0)
    steps = np.arange(1, correct + 1)
    below = np.cumsum(stats.binom.pmf(correct - steps, guesses, q))  # f(v − i) − f(v)
    worst = float(np.max(below / steps))
    return min(tail + 2 * canaries * delta * worst, 1.0)


def one_run_epsilon_lower_bound(
    canaries: int, guesses: int, correct: int, *, delta: float, alpha: float = 0.05
) -> float:
    """The ε lower bound of a one-run audit at confidence 1 − ``alpha``.

    The largest ε at which :func:`one_run_p_value` is below α, found by bisection as in
    Steinke et al.'s code (to ~2⁻⁶⁰ of the bracket, returned from below, so every ε up to the
    answer is rejected). 0 when even ε = 0 is not rejected; ``math.inf`` when ε = 1000 still is.
    Arguments as in :func:`one_run_p_value`.
    """
    alpha = _check_alpha(alpha)
    if one_run_p_value(canaries, guesses, correct, 0.0, delta) >= alpha:
        return 0.0
    low, high = 0.0, 1.0
    while one_run_p_value(canaries, guesses, correct, high, delta) < alpha:
        low, high = high, 2 * high
        if high > _EPSILON_CEILING:
            return math.inf
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if one_run_p_value(canaries, guesses, correct, middle, delta) < alpha:
            low = middle
        else:
            high = middle
    return low


@dataclass(frozen=True)
class OneRunResult:
    """A one-run audit: m canaries, r guesses, v of them right, and the ε lower bound."""

    canaries: int
    guesses: int
    correct: int
    delta: float
    confidence: float
    epsilon_lower: float

    def __str__(self) -> str:
        return (
            f"{self.correct}/{self.guesses} guesses right on {self.canaries} canaries → "
            f"ε ≥ {self.epsilon_lower:.2f} (δ = {self.delta:g}, {self.confidence:.0%} confidence)"
        )


def one_run_audit(
    scores: Scores,
    included: Sequence[bool] | npt.NDArray[np.bool_],
    *,
    guesses_in: int,
    guesses_out: int,
    delta: float,
    alpha: float = 0.05,
) -> OneRunResult:
    """A one-run audit from canary scores (Steinke, Nasr & Jagielski 2023, Algorithm 1).

    ``scores`` (shape (m,)): the attack's score of each canary, higher = "more likely in";
    ``included`` (shape (m,), booleans): which canaries the run really used — each must have been
    included independently with probability ½, *before* the run. The auditor guesses "in" for the
    ``guesses_in`` highest scores and "out" for the ``guesses_out`` lowest (abstaining on the
    rest; ties broken by position), counts the right guesses and calls
    :func:`one_run_epsilon_lower_bound`.
    """
    score_array = _scores(scores, "scores")
    mask = np.asarray(included)
    if mask.dtype != np.bool_:
        raise TypeError(
            f"included must be booleans (True = the run used the canary), got {mask.dtype}"
        )
    if mask.shape != score_array.shape:
        raise ValueError(
            f"included must have the scores' shape {score_array.shape}, got {mask.shape}"
        )
    m = score_array.size
    guesses_in = check_nonnegative_int(guesses_in, "guesses_in")
    guesses_out = check_nonnegative_int(guesses_out, "guesses_out")
    if guesses_in + guesses_out > m:
        raise ValueError(
            f"guesses_in + guesses_out = {guesses_in + guesses_out} exceeds the {m} canaries"
        )
    delta = check_delta(delta, allow_zero=True)
    alpha = _check_alpha(alpha)
    order = np.argsort(score_array, kind="stable")  # ascending
    said_out, said_in = order[:guesses_out], order[m - guesses_in :]
    correct = int(mask[said_in].sum()) + int((~mask[said_out]).sum())
    guesses = guesses_in + guesses_out
    bound = one_run_epsilon_lower_bound(m, guesses, correct, delta=delta, alpha=alpha)
    return OneRunResult(m, guesses, correct, delta, 1.0 - alpha, bound)


def gaussian_epsilon(noise_multiplier: float, delta: float) -> float:
    """The exact ε of the Gaussian mechanism with noise std ``noise_multiplier`` × sensitivity.

    The smallest ε with ``gaussian_delta(σ, 1, ε) ≤ δ`` (Balle & Wang 2018, Thm. 8; δ(ε) is
    decreasing), by bisection, returned rounded *up*. One DP-SGD step without subsampling is this
    mechanism with σ = the noise multiplier (add/remove neighbours; sensitivity C). 0 when the
    mechanism is already (0, δ)-DP.
    """
    sigma = check_positive(noise_multiplier, "noise_multiplier")
    delta = check_delta(delta)
    if gaussian_delta(sigma, 1.0, 1e-300) <= delta:  # δ at ε → 0: the total variation distance
        return 0.0
    low, high = 0.0, 1.0
    while gaussian_delta(sigma, 1.0, high) > delta:
        low, high = high, 2 * high
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if middle > 0 and gaussian_delta(sigma, 1.0, middle) > delta:
            low = middle
        else:
            high = middle
    return high


def max_posterior(prior: float, epsilon: float) -> float:
    """The most an attacker's belief that *you* are in the data can rise after seeing an ε-DP
    output: posterior ≤ e^ε·p / (e^ε·p + 1 − p) for prior p (posterior odds ≤ e^ε × prior odds;
    Kasiviswanathan & Smith 2014, "On the 'semantics' of differential privacy").

    The condition: the attacker's uncertainty is only about your record — the other records are
    known to them, or independent of yours. With correlated records (relatives, repeated
    measurements) the data without you still carry evidence about you, and the bound can fail
    (Kifer & Machanavajjhala 2011, "No free lunch in data privacy").

    ``prior`` in [0, 1], ε > 0, pure ε-DP. For δ > 0 there is no such pointwise bound: the odds
    bound holds only outside the outputs where the privacy loss exceeds ε, and how likely those
    are depends on the mechanism, not simply on δ (the Gaussian mechanism with σ = 0.75 is
    (6.13, 10⁻⁵)-DP, yet its privacy loss exceeds 6.13 with probability ≈ 4.2·10⁻⁵).
    """
    prior = _check_rate(prior, "prior")
    epsilon = check_epsilon(epsilon)
    if prior in (0.0, 1.0):
        return prior
    return float(special.expit(epsilon + special.logit(prior)))  # no overflow for large ε
