"""Lesson 22's checkers (course_lib.exercises.auditing) and their hidden grading cases: the
solutions pass, plausible mistakes fail with a message naming the input."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from course_lib.dp.auditing import clopper_pearson, epsilon_lower_bound, max_posterior
from course_lib.exercises import Incorrect, _registry, check
from tools.grading.hidden import HIDDEN


@pytest.fixture(autouse=True)
def _fresh_attempts() -> None:
    _registry._WRONG_ATTEMPTS.clear()


def largest_posterior(prior, epsilon):
    odds = math.exp(epsilon) * prior / (1 - prior)
    return odds / (1 + odds)


def cp_interval(k, n, alpha):
    low = 0.0 if k == 0 else stats.beta.ppf(alpha / 2, k, n - k + 1)
    high = 1.0 if k == n else stats.beta.ppf(1 - alpha / 2, k + 1, n - k)
    return float(low), float(high)


def lower_bound(tpr, fpr, delta):
    best = 0.0
    if tpr - delta > 0:
        best = max(best, math.inf if fpr == 0 else math.log((tpr - delta) / fpr))
    if 1 - fpr - delta > 0:
        best = max(best, math.inf if tpr == 1 else math.log((1 - fpr - delta) / (1 - tpr)))
    return best


SOLUTIONS = {
    "22.max_posterior": largest_posterior,
    "22.clopper_pearson": cp_interval,
    "22.epsilon_lower_bound": lower_bound,
}

MISTAKES = {
    # forgot to turn odds back into a probability
    "22.max_posterior": lambda p, e: math.exp(e) * p / (1 - p),
    # one-sided ends (α instead of α/2)
    "22.clopper_pearson": lambda k, n, a: (
        0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1)),
        1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k)),
    ),
    # only the first inequality
    "22.epsilon_lower_bound": lambda t, f, d: max(0.0, math.log((t - d) / f)) if t > d else 0.0,
}


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_the_solution_passes(name: str, contract) -> None:
    contract.solution_passes(name, SOLUTIONS[name])


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_a_plausible_mistake_fails_naming_the_input(name: str, contract) -> None:
    contract.mistake_fails_naming_the_input(name, MISTAKES[name])


def test_an_unstarted_exercise_gets_its_task(capsys: pytest.CaptureFixture[str]) -> None:
    def stub(prior, epsilon):
        raise NotImplementedError("your code here")

    assert not check("22.max_posterior", stub)
    assert "not implemented yet" in capsys.readouterr().out


REFERENCES = {
    "22.max_posterior": max_posterior,
    "22.clopper_pearson": clopper_pearson,
    "22.epsilon_lower_bound": epsilon_lower_bound,
}


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_hidden_cases_accept_the_solution_and_reject_the_mistake(name: str, contract) -> None:
    contract.hidden_cases_accept_and_reject(name, SOLUTIONS[name], MISTAKES[name], REFERENCES[name])


def test_a_function_fitted_to_the_checkers_inputs_fails_the_hidden_cases() -> None:
    table = {(7, 20, 0.05), (0, 50, 0.05), (50, 50, 0.05), (1, 1000, 0.01), (3, 4, 0.2)}
    answers = {key: clopper_pearson(*key) for key in table}

    def memorised(k, n, alpha):
        return answers.get((k, n, alpha), (0.0, 1.0))

    assert check("22.clopper_pearson", memorised)
    with pytest.raises(Incorrect):
        HIDDEN["22.clopper_pearson"](memorised, clopper_pearson, torch.Generator().manual_seed(1))
