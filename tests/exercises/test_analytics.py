"""Lesson 23's checkers (course_lib.exercises.analytics) and their hidden grading cases: the
solutions pass, plausible mistakes fail with a message naming the input.

The grader's hidden cases (tools/grading/hidden.py) are tested here too: they accept the solution
and reject each plausible mistake."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from course_lib.dp.analytics import partition_threshold, quantile_scores
from course_lib.dp.synthetic import total_variation
from course_lib.exercises import Incorrect, _registry, check
from tools.grading.hidden import HIDDEN


@pytest.fixture(autouse=True)
def _fresh_attempts() -> None:
    _registry._WRONG_ATTEMPTS.clear()


def threshold(epsilon, delta, max_rows):
    s = max_rows / epsilon
    tau = max_rows + 1
    while max_rows * math.exp(-(tau - max_rows) / s) / (1 + math.exp(-1 / s)) > delta:
        tau += 1
    return tau


def scores(values, candidates, alpha):
    values = np.asarray(values)
    below = np.array([(values < c).sum() for c in candidates])
    above = np.array([(values > c).sum() for c in candidates])
    return -np.abs((1 - alpha) * below - alpha * above)


def tv(p, q):
    p, q = np.asarray(p, float), np.asarray(q, float)
    return 0.5 * np.abs(p / p.sum() - q / q.sum()).sum()


SOLUTIONS: dict[str, Callable[..., Any]] = {
    "23.partition_threshold": threshold,
    "23.quantile_scores": scores,
    "23.total_variation": tv,
}

MISTAKES: dict[str, Callable[..., Any]] = {
    # the continuous textbook formula, not rounded to the exact smallest integer
    "23.partition_threshold": lambda e, d, k: k + k / e * math.log(k / (2 * d)),
    # ≤ and ≥ instead of strict: ties counted on both sides
    "23.quantile_scores": lambda v, c, a: (
        -np.abs(
            (1 - a) * np.array([(np.asarray(v) <= x).sum() for x in c])
            - a * np.array([(np.asarray(v) >= x).sum() for x in c])
        )
    ),
    # L1 distance: the ½ forgotten
    "23.total_variation": lambda p, q: np.abs(
        np.asarray(p, float) / np.sum(p) - np.asarray(q, float) / np.sum(q)
    ).sum(),
}


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_the_solution_passes(name: str, contract) -> None:
    contract.solution_passes(name, SOLUTIONS[name])


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_a_plausible_mistake_fails_naming_the_input(name: str, contract) -> None:
    contract.mistake_fails_naming_the_input(name, MISTAKES[name])


def test_an_unstarted_exercise_gets_its_task(capsys: pytest.CaptureFixture[str]) -> None:
    def stub(epsilon, delta, max_rows):
        raise NotImplementedError("your code here")

    assert not check("23.partition_threshold", stub)
    assert "not implemented yet" in capsys.readouterr().out


REFERENCES: dict[str, Callable[..., Any]] = {
    "23.partition_threshold": lambda e, d, k: partition_threshold(e, d, k)[1],
    "23.quantile_scores": quantile_scores,
    "23.total_variation": total_variation,
}


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_hidden_cases_accept_the_solution_and_reject_the_mistake(name: str, contract) -> None:
    contract.hidden_cases_accept_and_reject(name, SOLUTIONS[name], MISTAKES[name], REFERENCES[name])


def test_a_function_fitted_to_the_checkers_inputs_fails_the_hidden_cases() -> None:
    seen = [(1.0, 1e-6, 1), (0.3, 1e-5, 4), (2.0, 1e-9, 10), (5.0, 0.01, 2), (0.1, 1e-3, 1)]
    answers = {key: partition_threshold(*key)[1] for key in seen}

    def memorised(epsilon, delta, max_rows):
        return answers.get((epsilon, delta, max_rows), 10)

    assert check("23.partition_threshold", memorised)
    case = HIDDEN["23.partition_threshold"]
    with pytest.raises(Incorrect):
        case(memorised, REFERENCES["23.partition_threshold"], torch.Generator().manual_seed(1))
