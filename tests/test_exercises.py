"""The self-checking exercise convention: friendly ✓/✗ lines, never a crash on a wrong answer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from course_lib.exercises import (
    Incorrect,
    check,
    expect_close,
    expect_equal,
    expect_shape,
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


def test_right_and_wrong_answers(capsys: pytest.CaptureFixture[str]) -> None:
    assert check("01.reshape", torch.arange(12).reshape(3, 4))
    assert capsys.readouterr().out == "✓ 01.reshape: correct!\n"
    assert not check("01.reshape", torch.arange(12).reshape(4, 3))
    out = capsys.readouterr().out
    assert (
        out.startswith("✗ 01.reshape: your 3×4 tensor has shape (4, 3), expected (3, 4)")
        and "hint:" in out
    )


def test_unanswered_and_unimplemented_are_friendly(capsys: pytest.CaptureFixture[str]) -> None:
    assert not check("01.reshape", ...)
    assert "not answered yet" in capsys.readouterr().out

    def stub(records, key, value):
        raise NotImplementedError("your code here")

    assert not check("00.count_where", stub)
    assert "not implemented yet — your code here" in capsys.readouterr().out


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
    with pytest.raises(Incorrect, match="different values"):
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
