"""The self-checking exercise convention: friendly ✓/✗ lines, never a crash on a wrong answer;
help in steps (task → nudge → hint); values compared without lossy casts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.exercises import (
    Incorrect,
    _registry,
    check,
    exercise,
    expect_close,
    expect_equal,
    expect_shape,
    hint,
    registered_exercises,
)
from course_lib.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHECK_CALL = re.compile(r"""check\(\s*["'](\d\d\.[\w.]+)["']""")


def _checked_names(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return [
        name
        for c in cells
        if c["cell_type"] == "code"
        for name in CHECK_CALL.findall("".join(c["source"]))
    ]


@pytest.fixture(autouse=True)
def _fresh_attempts() -> None:
    """Each test starts as a learner who has not answered anything yet."""
    _registry._WRONG_ATTEMPTS.clear()


def test_right_and_wrong_answers(capsys: pytest.CaptureFixture[str]) -> None:
    assert check("01.reshape", torch.arange(12).reshape(3, 4))
    # Lessons store this exact line (nbval compares it): it must never change.
    assert capsys.readouterr().out == "✓ 01.reshape: correct!\n"
    assert not check("01.reshape", torch.arange(12).reshape(4, 3))
    out = capsys.readouterr().out
    assert out.startswith("✗ 01.reshape: your 3×4 tensor of 0…11 has shape (4, 3), expected (3, 4)")


def test_help_comes_in_steps(capsys: pytest.CaptureFixture[str]) -> None:
    """Untouched stub → the task; first wrong answer → a nudge; later ones → the hint."""
    near_solution = "sum(r['age'] for r in records) / len(records)"

    def stub(records):
        raise NotImplementedError("your code here")

    for untouched in (stub, ...):
        assert not check("00.mean_age", untouched)
        out = capsys.readouterr().out
        assert "your task: write mean_age(records)" in out
        assert "nudge" not in out and "hint" not in out and near_solution not in out
    assert not check("00.mean_age", lambda records: 0)
    out = capsys.readouterr().out
    assert "nudge: an average is a total divided by a count" in out
    assert near_solution not in out and "hint('00.mean_age')" in out
    assert not check("00.mean_age", lambda records: 1)
    assert f"  hint: {near_solution}" in capsys.readouterr().out
    assert check("00.mean_age", lambda records: sum(r["age"] for r in records) / len(records))


def test_hint_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    hint("01.reshape")
    assert (
        capsys.readouterr().out
        == "hint for 01.reshape: torch.arange(12).reshape(3, 4) — or .view(3, 4)\n"
    )
    with pytest.raises(ValueError, match="01.reshape"):
        hint("01.reshap")


def test_untouched_stubs_from_the_student_edition_are_friendly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert not check("01.reshape", ...)
    out = capsys.readouterr().out
    assert out.startswith("✗ 01.reshape: not answered yet — your task: make `answer` a 3×4")
    assert "replace the `...` with your code" in out

    def stub(records, key, value):
        raise NotImplementedError("your code here")

    assert not check("00.count_where", stub)
    out = capsys.readouterr().out
    assert out.startswith("✗ 00.count_where: not implemented yet — your task: write count_where")
    assert "replace `raise NotImplementedError(...)` with your code" in out


def test_exercises_without_task_or_nudge_get_generic_help(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_registry, "_EXERCISES", dict(_registry._EXERCISES))
    exercise("99.bare", hint="the answer is 1")(lambda answer: expect_equal(answer, 1, "x"))
    check("99.bare", ...)
    assert "your task is in the text above this cell" in capsys.readouterr().out
    check("99.bare", 2)
    out = capsys.readouterr().out
    assert f"nudge: {_registry.DEFAULT_NUDGE}" in out and "the answer is 1" not in out


def test_forgotten_return_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    def count_where(records, key, value):
        sum(1 for record in records if record[key] == value)  # no return

    assert not check("00.count_where", count_where)
    assert "is None — did you forget `return`?" in capsys.readouterr().out
    for helper in (expect_equal, expect_close):
        with pytest.raises(Incorrect, match="did you forget `return`"):
            helper(None, torch.zeros(2))
    with pytest.raises(Incorrect, match="did you forget `return`"):
        expect_equal(None, 3)


def test_mismatches_name_the_input_and_the_first_differing_position(
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = torch.arange(12).reshape(3, 4)
    wrong[1, 2] = -1
    assert not check("01.reshape", wrong)
    out = capsys.readouterr().out
    assert "your 3×4 tensor of 0…11 differs from the expected value at 1 of 12 positions" in out
    assert "the first is [1, 2]: -1 instead of 6" in out
    with pytest.raises(Incorrect, match=r"off by up to 0\.5; the first value outside .* \[2\]"):
        expect_close(torch.tensor([1.0, 2.0, 3.5]), torch.tensor([1.0, 2.0, 3.0]))


def test_list_mismatches_name_the_first_differing_position() -> None:
    with pytest.raises(Incorrect, match=r"the first difference is at position 2$"):
        expect_equal([1, 2, 4, 5], [1, 2, 3, 5], "intersect(a, b)")
    with pytest.raises(Incorrect, match=r"\(2 items instead of 3\)$"):
        expect_equal([1, 2], [1, 2, 3], "intersect(a, b)")
    expect_equal((1, 2), (1, 2))


def test_lesson_00_checks_say_what_data_they_use(capsys: pytest.CaptureFixture[str]) -> None:
    assert not check("00.count_where", lambda records, key, value: 2)
    out = capsys.readouterr().out
    assert "count_where(records, 'diabetes', True) on the checker's 5 records" in out
    assert "Dara, 62, no diabetes" in out and "is 2, expected 3" in out
    assert not check("00.mean_age", lambda records: 38.0)  # right on the lesson's 3 records only
    assert "mean_age(records) on the checker's 5 records" in capsys.readouterr().out


# The learner's dtype is never cast to the expected one: a value that differs fails.
LOSSY = [
    ("01.reshape", torch.arange(12).reshape(3, 4) + 0.5),
    ("01.reshape", np.arange(12).reshape(3, 4) + 0.25),
    ("01.broadcast", torch.outer(torch.arange(1.0, 6.0), torch.arange(1.0, 6.0)) + 0.1),
    ("02.param_count", 101_770.5),
]


@pytest.mark.parametrize(
    ("name", "wrong"), LOSSY, ids=[f"{n}-{i}" for i, (n, _) in enumerate(LOSSY)]
)
def test_fractional_answers_are_not_rounded_into_right_ones(
    name: str, wrong: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not check(name, wrong)
    assert capsys.readouterr().out.startswith(f"✗ {name}")


def test_booleans_are_not_made_from_arbitrary_floats() -> None:
    mask = torch.tensor([True, False, True])
    for wrong in (torch.tensor([0.1, 0.0, 0.1]), torch.tensor([2, 0, 1]), np.array([0.5, 0, 1])):
        with pytest.raises(Incorrect, match="differs"):
            expect_equal(wrong, mask)
    for same in (
        torch.tensor([1.0, 0.0, 1.0]),
        torch.tensor([1, 0, 1]),
        np.array([True, False, True]),
    ):
        expect_equal(same, mask)


def _table() -> torch.Tensor:
    numbers = torch.arange(1, 6)
    return numbers.unsqueeze(1) * numbers.unsqueeze(0)


# Genuinely equivalent answers: other shapes of the same code, other libraries, other dtypes
# holding the same values, algebraically rearranged float formulas (within the tolerance).
EQUIVALENT = [
    ("01.reshape", torch.arange(12).view(3, -1)),
    ("01.reshape", np.arange(12).reshape(3, 4)),
    ("01.reshape", torch.arange(12.0).reshape(3, 4)),
    ("01.reshape", torch.arange(12, dtype=torch.int32).reshape(3, 4)),
    ("01.broadcast", _table()),
    ("01.broadcast", torch.outer(torch.arange(1.0, 6.0), torch.arange(1.0, 6.0)).double()),
    ("01.broadcast", np.arange(1, 6)[:, None] * np.arange(1, 6)),
    ("01.independent_copy", lambda t: torch.tensor(t.tolist())),
    ("01.gradient", np.float64(14.0)),
    ("02.neuron", lambda x, w, b: 1 / (1 + torch.exp(-(x @ w + b)))),
    ("02.neuron", lambda x, w, b: torch.sigmoid(b + (x * w).sum(dim=1))),
    ("02.param_count", 101_770.0),
    ("02.param_count", torch.tensor(101_770)),
    ("02.accuracy", lambda logits, labels: (logits.argmax(1) == labels).double().mean()),
    ("03.trainable_count", np.int64(16_581)),
]


@pytest.mark.parametrize(
    ("name", "answer"), EQUIVALENT, ids=[f"{n}-{i}" for i, (n, _) in enumerate(EQUIVALENT)]
)
def test_equivalent_answers_pass(
    name: str, answer: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(name, answer), capsys.readouterr().out
    assert capsys.readouterr().out == f"✓ {name}: correct!\n"


def test_a_crashing_answer_is_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    assert not check("00.mean_age", lambda records: 1 / 0)
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_unknown_exercise_suggests_close_names() -> None:
    with pytest.raises(ValueError, match="01.reshape"):
        check("01.reshap", None)


def test_result_is_silent_in_notebooks() -> None:
    result = check("01.gradient", 14.0)
    assert bool(result) and result._ipython_display_() is None


def test_expect_helpers() -> None:
    expect_close(1.00001, 1.0)
    with pytest.raises(Incorrect, match="expected 2"):
        expect_close(1.0, 2.0)
    with pytest.raises(Incorrect, match="shape"):
        expect_shape(torch.zeros(2), (3,))
    with pytest.raises(Incorrect, match="differs from the expected value"):
        expect_equal(torch.zeros(2), torch.ones(2))
    with pytest.raises(Incorrect, match="should be a tensor"):
        expect_close(object(), 1.0)


def test_every_lesson_has_two_checked_exercises_and_every_check_exists() -> None:
    known = set(registered_exercises())
    used: set[str] = set()
    for path in NOTEBOOKS:
        names = _checked_names(path)
        lesson = path.name[:2]
        assert len({n for n in names if n.startswith(lesson + ".")}) >= 2, (
            f"{path.name}: fewer than 2 exercises"
        )
        assert set(names) <= known, (
            f"{path.name} checks unregistered exercises {set(names) - known}"
        )
        used |= set(names)
    lessons = {p.name[:2] for p in NOTEBOOKS}
    unused = {n for n in known - used if n[:2] in lessons}
    assert not unused, f"registered but never used in a lesson: {sorted(unused)}"


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("00.count_where", lambda records, key, value: 0),
        ("00.mean_age", lambda records: 40),
        ("01.broadcast", torch.ones(5, 5)),
        ("01.independent_copy", lambda t: t),
        ("01.gradient", 12.0),
        ("02.neuron", lambda x, w, b: x @ w + b),
        ("02.param_count", 101_760),
        ("02.accuracy", lambda logits, labels: 1.0),
        ("03.freeze_features", lambda model: model),
        ("03.trainable_count", 165),
    ],
)
def test_part_one_checkers_reject_wrong_answers(
    name: str, wrong: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not check(name, wrong)
    assert capsys.readouterr().out.startswith(f"✗ {name}")
