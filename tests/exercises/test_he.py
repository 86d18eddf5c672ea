"""Exercises of lesson 18 (homomorphic encryption): answers are judged by the one integer rule of
course_lib.validation — a NumPy integer is an integer, a bool is not."""

from __future__ import annotations

import numpy as np
import pytest

from course_lib.exercises import _registry, check


@pytest.fixture(autouse=True)
def _fresh_attempts() -> None:
    _registry._WRONG_ATTEMPTS.clear()


@pytest.mark.parametrize("answer", [5, np.int64(5), np.int32(5)])
def test_levels_needed_takes_any_integer(answer, capsys: pytest.CaptureFixture[str]) -> None:
    assert check("18.levels_needed", answer), capsys.readouterr().out


@pytest.mark.parametrize("answer", [True, np.bool_(True), 5.0, "5"])
def test_levels_needed_refuses_what_is_not_an_integer(
    answer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not check("18.levels_needed", answer)
    assert "answer with a whole number" in capsys.readouterr().out


def test_levels_needed_still_judges_the_number(capsys: pytest.CaptureFixture[str]) -> None:
    assert not check("18.levels_needed", np.int64(3))
    assert "one more x²" in capsys.readouterr().out
