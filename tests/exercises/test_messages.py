"""The exercise messages of issue 22: a forgotten ``return`` is named as such in every function
exercise, ``08.max_steps`` takes a whole number in any numeric form, lessons 04–08 restate their
tasks and nudge before hinting, and a lesson's deliberately wrong demo is not an attempt."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

import course_lib.exercises._registry as registry
from course_lib.exercises import check, registered_exercises
from course_lib.exercises._registry import DEFAULT_NUDGE, FUNCTION_RETURNED_NONE, _lookup
from course_lib.paths import REPO_ROOT
from tools.grading.lesson import lesson_exercises

#: Every function exercise of the course (the answer is a ``def`` in the instructor's notebook).
FUNCTION_EXERCISES = sorted(
    exercise.name
    for notebook in REPO_ROOT.glob("notebooks/[0-9][0-9]_*.ipynb")
    for exercise in lesson_exercises(notebook.name[:2])
    if exercise.function
)
#: The twelve that said "raised TypeError" for a missing return before (issue 22).
NAMED_IN_THE_ISSUE = [
    "04.differencing_attack",
    "04.parallel_databases",
    "04.sensitivity",
    "05.rr_epsilon",
    "05.debias",
    "06.laplace_scale",
    "06.gaussian_sigma",
    "06.advanced_composition",
    "07.gnmax_data_independent",
    "19.blind",
    "19.intersect",
    "21.exposure",
]


@pytest.fixture(autouse=True)
def _fresh_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_WRONG_ATTEMPTS", Counter())


def _returns_nothing(*args: object, **kwargs: object) -> None:
    """A learner's function whose last line computes the answer but never returns it."""


def test_the_course_has_66_function_exercises_and_the_issue_names_twelve() -> None:
    assert len(FUNCTION_EXERCISES) == 66  # 57 in lessons 00–21, 3 each in lessons 22, 23, 24
    assert set(NAMED_IN_THE_ISSUE) <= set(FUNCTION_EXERCISES)


@pytest.mark.parametrize("name", FUNCTION_EXERCISES)
def test_a_function_that_returns_nothing_is_told_what_is_wrong(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not check(name, _returns_nothing)
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"✗ {name}: ")
    assert "raised" not in line, line  # what was wrong, never a TypeError from the checker
    if name in NAMED_IN_THE_ISSUE:
        assert line == f"✗ {name}: {FUNCTION_RETURNED_NONE}"


@pytest.mark.parametrize(
    "answer", [881, np.int64(881), torch.tensor(881), 881.0, np.float64(881.0)], ids=repr
)
def test_max_steps_takes_a_whole_number_in_any_numeric_form(answer: object) -> None:
    _lookup("08.max_steps").checker(answer)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (881.5, "max_steps should be a whole number of steps, got 881.5"),
        (True, "max_steps should be a whole number of steps, got True (a True/False)"),
        (torch.tensor(True), "got tensor(True) (a True/False)"),
        (torch.tensor([881]), "max_steps should be one number, got a tensor of shape (1,)"),
        (880, "you can afford more than 880 steps"),
        (882, "882 steps spend more than ε = 2"),
    ],
    ids=repr,
)
def test_max_steps_refuses_fractions_booleans_and_wrong_counts(
    answer: object, message: str
) -> None:
    with pytest.raises(registry.Incorrect, match=message.replace("(", r"\(").replace(")", r"\)")):
        _lookup("08.max_steps").checker(answer)


@pytest.mark.parametrize(
    "name", [n for n in registered_exercises() if n[:2] in {"04", "05", "06", "07", "08"}]
)
def test_lessons_04_to_08_restate_their_task_and_nudge_before_hinting(name: str) -> None:
    exercise = _lookup(name)
    assert exercise.task and len(exercise.task) > 30
    assert exercise.nudge != DEFAULT_NUDGE
    assert exercise.nudge != exercise.hint


def test_the_second_wrong_try_gets_the_nudge_then_the_hint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    check("06.laplace_scale", lambda sensitivity, epsilon: epsilon / sensitivity)
    first = capsys.readouterr().out
    assert f"nudge: {_lookup('06.laplace_scale').nudge}" in first
    check("06.laplace_scale", lambda sensitivity, epsilon: epsilon / sensitivity)
    assert "hint: b = sensitivity / epsilon" in capsys.readouterr().out


def test_a_lessons_wrong_demo_is_not_the_learners_attempt(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Lesson 00 shows a deliberately wrong answer; with ``demo=True`` it gets the nudge and the
    learner's own first wrong answer still gets the nudge, not the hint."""
    assert not check("00.mean_age", lambda records: 0, demo=True)
    assert "nudge:" in capsys.readouterr().out
    assert registry._WRONG_ATTEMPTS["00.mean_age"] == 0
    assert not check("00.mean_age", lambda records: 1)
    out = capsys.readouterr().out
    assert "nudge:" in out and "hint:" not in out
    assert not check("00.mean_age", lambda records: 2)
    assert "hint:" in capsys.readouterr().out
