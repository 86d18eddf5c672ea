"""Checkers for lesson 22: reading and auditing ε.

Each exercise asks for a function; the checker calls it on inputs the lesson did not use and
compares with :mod:`course_lib.dp.auditing`, naming the input in every ✗ message. (The grader adds
random inputs of its own: :mod:`tools.grading.hidden`.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

from course_lib.dp.auditing import clopper_pearson, epsilon_lower_bound, max_posterior
from course_lib.exercises._registry import (
    FUNCTION_RETURNED_NONE,
    exercise,
    expect,
    expect_callable,
    expect_close,
)


@exercise(
    "22.max_posterior",
    task="write largest_posterior(prior, epsilon): the largest posterior probability an ε-DP "
    "output can give an attacker who starts from `prior`",
    nudge="work with odds: DP multiplies the prior odds p / (1 − p) by at most e^ε",
    hint="odds = math.exp(epsilon) * prior / (1 - prior); return odds / (1 + odds)",
)
def _(posterior: Callable[[float, float], float]) -> None:
    expect_callable(posterior, "largest_posterior", "22.max_posterior")
    for prior, epsilon in [(0.5, 1.0), (0.01, 0.1), (0.01, 5.0), (0.3, 2.0), (1e-4, 10.0)]:
        expect_close(
            float(posterior(prior, epsilon)),
            max_posterior(prior, epsilon),
            rtol=1e-9,
            atol=1e-12,
            what=f"largest_posterior(prior={prior}, epsilon={epsilon})",
        )


@exercise(
    "22.clopper_pearson",
    task="write cp_interval(k, n, alpha): the exact two-sided (1 − alpha) confidence "
    "interval (low, high) for k successes out of n trials",
    nudge="the ends are quantiles of Beta distributions (scipy.stats.beta.ppf); mind k = 0 "
    "and k = n",
    hint="low = 0 if k == 0 else stats.beta.ppf(alpha / 2, k, n - k + 1); "
    "high = 1 if k == n else stats.beta.ppf(1 - alpha / 2, k + 1, n - k)",
)
def _(interval: Callable[[int, int, float], tuple[float, float]]) -> None:
    expect_callable(interval, "cp_interval", "22.clopper_pearson")
    for k, n, alpha in [(7, 20, 0.05), (0, 50, 0.05), (50, 50, 0.05), (1, 1000, 0.01), (3, 4, 0.2)]:
        what = f"cp_interval(k={k}, n={n}, alpha={alpha})"
        answer = interval(k, n, alpha)
        expect(answer is not None, FUNCTION_RETURNED_NONE)
        expect(
            isinstance(answer, tuple | list) and len(answer) == 2,
            f"{what} should be a pair (low, high), got {answer!r}",
        )
        want = clopper_pearson(k, n, alpha)
        expect_close(float(answer[0]), want[0], rtol=1e-6, atol=1e-9, what=f"the low end of {what}")
        expect_close(
            float(answer[1]), want[1], rtol=1e-6, atol=1e-9, what=f"the high end of {what}"
        )


@exercise(
    "22.epsilon_lower_bound",
    task="write lower_bound(tpr, fpr, delta): the smallest ε consistent with an attack "
    "reaching these rates against an (ε, δ)-DP mechanism (0 if none is ruled out)",
    nudge="DP bounds both TPR ≤ e^ε·FPR + δ and 1 − FPR ≤ e^ε·(1 − TPR) + δ: solve each for ε",
    hint="max(0, math.log((tpr - delta) / fpr), math.log((1 - fpr - delta) / (1 - tpr))), "
    "skipping a logarithm whose numerator is ≤ 0",
)
def _(lower_bound: Callable[[float, float, float], float]) -> None:
    expect_callable(lower_bound, "lower_bound", "22.epsilon_lower_bound")
    cases = [(0.9, 0.01, 0.0), (0.5, 0.1, 1e-5), (0.2, 0.0001, 1e-3), (0.3, 0.3, 0.0),
             (0.999, 0.6, 0.0), (0.05, 0.2, 0.0)]  # fmt: skip
    for tpr, fpr, delta in cases:
        want = epsilon_lower_bound(tpr, fpr, delta)
        got = float(lower_bound(tpr, fpr, delta))
        expect(math.isfinite(got), f"lower_bound({tpr}, {fpr}, {delta}) is {got}")
        expect_close(got, want, rtol=1e-9, atol=1e-12, what=f"lower_bound({tpr}, {fpr}, {delta})")
