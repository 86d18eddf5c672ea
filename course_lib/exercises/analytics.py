"""Checkers for lesson 23: DP analytics and synthetic data.

Each exercise asks for a function; the checker calls it on inputs the lesson did not use and
compares with :mod:`course_lib.dp.analytics` and :mod:`course_lib.dp.synthetic`, naming the input
in every ✗ message. (The grader adds random inputs of its own: :mod:`tools.grading.hidden`.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from course_lib.dp.analytics import partition_threshold, quantile_scores
from course_lib.dp.synthetic import total_variation
from course_lib.exercises._registry import (
    FUNCTION_RETURNED_NONE,
    exercise,
    expect,
    expect_callable,
    expect_close,
)


@exercise(
    "23.partition_threshold",
    task="write threshold(epsilon, delta, max_rows): the smallest integer τ such that releasing "
    "keys whose count + discrete Laplace(max_rows/ε) noise is ≥ τ leaks a key of one user with "
    "probability ≤ δ",
    nudge="one user holds at most max_rows keys, each with a count ≤ max_rows; add up "
    "P[max_rows + Z ≥ τ] = e^{−(τ − max_rows)/s} / (1 + e^{−1/s}) over those keys",
    hint="s = max_rows / epsilon; start at τ = max_rows + 1 and increase τ while "
    "max_rows * math.exp(-(τ - max_rows) / s) / (1 + math.exp(-1 / s)) > delta",
)
def _(threshold: Callable[[float, float, int], int]) -> None:
    expect_callable(threshold, "threshold", "23.partition_threshold")
    for epsilon, delta, max_rows in [(1.0, 1e-6, 1), (0.3, 1e-5, 4), (2.0, 1e-9, 10),
                                     (5.0, 0.01, 2), (0.1, 1e-3, 1)]:  # fmt: skip
        what = f"threshold(epsilon={epsilon}, delta={delta}, max_rows={max_rows})"
        got = threshold(epsilon, delta, max_rows)
        expect(got is not None, FUNCTION_RETURNED_NONE)
        want = partition_threshold(epsilon, delta, max_rows)[1]
        expect(
            float(got) == want,
            f"{what} should be {want}, got {got!r}"
            + (" — τ must be an integer (round up)" if float(got) != int(float(got)) else ""),
        )


@exercise(
    "23.quantile_scores",
    task="write scores(values, candidates, alpha): the utility −|(1−α)·#below − α·#above| of "
    "each candidate as the alpha-quantile (#below / #above: values strictly below / above it)",
    nudge="count, for each candidate c, the values < c and the values > c; values equal to c "
    "count in neither",
    hint="values = np.asarray(values); below = np.array([(values < c).sum() for c in "
    "candidates]); above likewise with >; return -np.abs((1 - alpha) * below - alpha * above)",
)
def _(scores: Callable[[Any, Any, float], Any]) -> None:
    expect_callable(scores, "scores", "23.quantile_scores")
    cases: list[tuple[list[float], list[float], float]] = [
        ([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0], [0.0, 2.0, 4.0, 6.0, 8.0], 0.5),
        ([10.0, 20.0, 20.0, 30.0], [15.0, 20.0, 25.0], 0.25),
        ([0.5] * 5 + [7.5] * 3, [0.5, 4.0, 7.5], 0.9),
        ([2.0], [1.0, 2.0, 3.0], 0.0),
    ]
    for values, candidates, alpha in cases:
        what = f"scores({values}, {candidates}, alpha={alpha})"
        got = scores(list(values), list(candidates), alpha)
        expect(got is not None, FUNCTION_RETURNED_NONE)
        got_array = np.asarray(got, dtype=np.float64).ravel()
        want = quantile_scores(values, candidates, alpha)
        expect(
            got_array.shape == want.shape,
            f"{what} should give one score per candidate ({want.size}), got {got_array.size}",
        )
        expect(
            np.allclose(got_array, want, atol=1e-9),
            f"{what} should be {want.tolist()}, got {got_array.tolist()}",
        )


@exercise(
    "23.total_variation",
    task="write tv(p, q): the total-variation distance between two tables of counts of the same "
    "shape, after normalising each to sum to 1",
    nudge="TV is half the L1 distance between the two *probability* tables",
    hint="p = np.asarray(p, float); q = np.asarray(q, float); "
    "return 0.5 * np.abs(p / p.sum() - q / q.sum()).sum()",
)
def _(tv: Callable[[Any, Any], float]) -> None:
    expect_callable(tv, "tv", "23.total_variation")
    cases: list[tuple[Any, Any]] = [
        ([[10, 0], [0, 10]], [[5, 5], [5, 5]]),
        ([1, 2, 3, 4], [4, 3, 2, 1]),
        ([[3, 1, 0], [2, 2, 2]], [[30, 10, 0], [20, 20, 20]]),
        ([100, 0, 0], [0, 0, 7]),
    ]
    for p, q in cases:
        what = f"tv({p}, {q})"
        got = tv(np.array(p), np.array(q))
        expect(got is not None, FUNCTION_RETURNED_NONE)
        expect_close(float(got), total_variation(p, q), rtol=1e-9, atol=1e-12, what=what)
