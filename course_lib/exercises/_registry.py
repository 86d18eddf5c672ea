"""The machinery behind self-checking exercises.

Every exercise in a lesson ends with ``check("NN.name", answer)``. The check looks up a *checker*
registered under that name (see the modules next to this one, one per part of the course), runs it
on the learner's answer and prints one friendly line: ✓ when it is right, ✗ with the reason and a
hint when it is not. It never raises on a wrong answer, so a notebook keeps running.

To add an exercise, write a checker in the part's module::

    @exercise("01.reshape", hint="x.reshape(rows, cols) or x.view(rows, cols)")
    def _(answer):
        expect_shape(answer, (4, 3))

A checker returns nothing when the answer is right and raises :class:`Incorrect` (the ``expect_*``
helpers do that for you) with a message saying what is wrong.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "CheckResult",
    "Incorrect",
    "check",
    "exercise",
    "expect",
    "expect_callable",
    "expect_close",
    "expect_equal",
    "expect_shape",
    "registered_exercises",
]

PASS_MARK = "✓"
FAIL_MARK = "✗"


class Incorrect(Exception):
    """Raised by a checker to say what is wrong with an answer."""


@dataclass(frozen=True)
class Exercise:
    name: str
    checker: Callable[[Any], None]
    hint: str


_EXERCISES: dict[str, Exercise] = {}


def exercise(name: str, hint: str) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """Register ``checker`` as the check for exercise ``name`` (e.g. ``"01.reshape"``)."""

    def register(checker: Callable[[Any], None]) -> Callable[[Any], None]:
        if name in _EXERCISES:
            raise ValueError(f"exercise {name!r} is registered twice")
        _EXERCISES[name] = Exercise(name, checker, hint)
        return checker

    return register


def _load_all_checkers() -> None:
    package = importlib.import_module("course_lib.exercises")
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"course_lib.exercises.{module.name}")


def registered_exercises() -> list[str]:
    """Names of every exercise the course knows, sorted."""
    _load_all_checkers()
    return sorted(_EXERCISES)


class CheckResult:
    """What :func:`check` returns: truthy when the answer passed. Shows nothing in a notebook
    (the ✓/✗ line is already printed), so a ``check(...)`` at the end of a cell adds no clutter."""

    def __init__(self, name: str, passed: bool) -> None:
        self.name, self.passed = name, passed

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"CheckResult({self.name!r}, passed={self.passed})"

    def _ipython_display_(self) -> None:
        """Display nothing: the ✓/✗ line has been printed already."""


def check(name: str, answer: Any) -> CheckResult:
    """Check a learner's ``answer`` to exercise ``name``; print ✓ or ✗ and return the result
    (truthy when it passed)."""
    _load_all_checkers()
    if name not in _EXERCISES:
        close = difflib.get_close_matches(name, _EXERCISES, n=3)
        suggestion = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"There is no exercise called {name!r}.{suggestion}")
    ex = _EXERCISES[name]
    if answer is Ellipsis:
        print(f"{FAIL_MARK} {name}: not answered yet — replace the `...` with your code.")
        return CheckResult(name, False)
    try:
        ex.checker(answer)
    except Incorrect as wrong:
        print(f"{FAIL_MARK} {name}: {wrong}\n  hint: {ex.hint}")
        return CheckResult(name, False)
    except NotImplementedError:
        print(f"{FAIL_MARK} {name}: not implemented yet — your code here.\n  hint: {ex.hint}")
        return CheckResult(name, False)
    except Exception as error:  # a learner's function may fail in any way; report, don't crash
        print(
            f"{FAIL_MARK} {name}: your answer raised {type(error).__name__}: {error}\n"
            f"  hint: {ex.hint}"
        )
        return CheckResult(name, False)
    print(f"{PASS_MARK} {name}: correct!")
    return CheckResult(name, True)


# -- helpers for writing checkers ---------------------------------------------------------------


def expect(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition`` holds."""
    if not condition:
        raise Incorrect(message)


def expect_callable(answer: Any, name: str, exercise_name: str) -> None:
    """Fail unless the learner passed their function itself (not the result of calling it)."""
    expect(
        callable(answer),
        f"pass your function itself: check('{exercise_name}', {name}), not its result",
    )


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise Incorrect(
            f"{what} should be a tensor (or a number), got {type(value).__name__}"
        ) from error


def expect_shape(answer: Any, shape: tuple[int, ...], what: str = "your answer") -> None:
    """Fail unless ``answer`` is a tensor of exactly ``shape``."""
    tensor = _as_tensor(answer, what)
    expect(
        tuple(tensor.shape) == tuple(shape),
        f"{what} has shape {tuple(tensor.shape)}, expected {tuple(shape)}",
    )


def expect_equal(answer: Any, expected: Any, what: str = "your answer") -> None:
    """Fail unless ``answer`` equals ``expected`` exactly (tensors compared elementwise)."""
    if isinstance(expected, torch.Tensor) or isinstance(answer, torch.Tensor):
        got, want = _as_tensor(answer, what), _as_tensor(expected, "the expected value")
        expect_shape(got, tuple(want.shape), what)
        expect(
            bool(torch.equal(got.to(want.dtype), want)),
            f"{what} has the right shape but different values",
        )
    else:
        expect(answer == expected, f"{what} is {answer!r}, expected {expected!r}")


def expect_close(
    answer: Any, expected: Any, *, rtol: float = 1e-4, atol: float = 1e-6, what: str = "your answer"
) -> None:
    """Fail unless ``answer`` is within the tolerances of ``expected`` (numbers or tensors)."""
    got = _as_tensor(answer, what).to(torch.float64)
    want = _as_tensor(expected, "the expected value").to(torch.float64)
    expect_shape(got, tuple(want.shape), what)
    if not torch.allclose(got, want, rtol=rtol, atol=atol):
        gap = (got - want).abs().max().item()
        shown = (
            f"{got.item():.6g}, expected {want.item():.6g}"
            if got.numel() == 1
            else f"off by up to {gap:.3g}"
        )
        raise Incorrect(f"{what} is {shown}")
