"""What every function exercise's tests check, in one place: the ``contract`` fixture.

A lesson's test module defines ``SOLUTIONS`` (a correct answer per exercise), ``MISTAKES`` (a
plausible wrong one) and ``REFERENCES`` (the ``course_lib`` function the grader compares with),
and calls the contract from three one-line tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from course_lib.exercises import Incorrect, check
from tools.grading.hidden import HIDDEN


class ExerciseContract:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def solution_passes(self, name: str, solution: Callable[..., Any]) -> None:
        """The course's check accepts a correct answer and says so in one line."""
        assert check(name, solution)
        assert self.capsys.readouterr().out == f"✓ {name}: correct!\n"

    def mistake_fails_naming_the_input(
        self, name: str, mistake: Callable[..., Any], *, naming: str = "("
    ) -> None:
        """A plausible mistake gets ✗, the input it failed on (its first line shows ``naming``:
        a call ``f(...)``, or `` with `` for an input described in words), and a nudge."""
        assert not check(name, mistake)
        out = self.capsys.readouterr().out
        assert out.startswith(f"✗ {name}: ") and naming in out.splitlines()[0]
        assert "nudge:" in out

    @staticmethod
    def hidden_cases_accept_and_reject(
        name: str,
        solution: Callable[..., Any],
        mistake: Callable[..., Any],
        reference: Callable[..., Any],
    ) -> None:
        """The grader's hidden cases accept the solution and reject the mistake."""
        case = HIDDEN[name]
        case(solution, reference, torch.Generator().manual_seed(0))
        with pytest.raises(Incorrect):
            for seed in range(5):  # a mistake may agree on one draw, never on all of them
                case(mistake, reference, torch.Generator().manual_seed(seed))


@pytest.fixture
def contract(capsys: pytest.CaptureFixture[str]) -> ExerciseContract:
    return ExerciseContract(capsys)
