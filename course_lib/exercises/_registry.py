"""The machinery behind self-checking exercises.

Every exercise in a lesson ends with ``check("NN.name", answer)``. The check looks up a *checker*
registered under that name (see the modules next to this one, one per part of the course), runs it
on the learner's answer and prints one friendly line: ✓ when it is right, ✗ with the reason when it
is not. It never raises on a wrong answer, so a notebook keeps running.

Help comes in steps, so that a hint teaches rather than gives the answer away:

- an exercise not attempted yet (``answer = ...`` or a function still raising
  ``NotImplementedError``) gets its task restated, never a hint;
- the first wrong answer gets a *nudge* (where to look);
- a later wrong answer gets the *hint* (close to the solution), and so does an explicit
  ``hint("NN.name")``.

To add an exercise, write a checker in the part's module::

    @exercise(
        "01.reshape",
        task="make `answer` a 3×4 tensor holding 0, 1, …, 11 row by row",
        nudge="a tensor can be given a new shape without copying its numbers",
        hint="torch.arange(12).reshape(3, 4) — or .view(3, 4)",
    )
    def _(answer):
        expect_equal(answer, torch.arange(12).reshape(3, 4), "your 3×4 tensor")

A checker returns nothing when the answer is right and raises :class:`Incorrect` (the ``expect_*``
helpers do that for you) with a message saying what is wrong — name the input the checker used,
so the learner can reproduce it.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import pkgutil
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
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
    "expect_not_none",
    "expect_shape",
    "hint",
    "registered_exercises",
]

PASS_MARK = "✓"
FAIL_MARK = "✗"
#: What a first wrong answer gets when its exercise has no nudge of its own.
DEFAULT_NUDGE = "re-read the task and try your code on a small input you can check by hand"
FORGOT_RETURN = "is None — did you forget `return`?"
#: What a checker that failed on a function's ``None`` result says instead of its own error.
FUNCTION_RETURNED_NONE = "your function returned None — did you forget `return`?"


class Incorrect(Exception):
    """Raised by a checker to say what is wrong with an answer."""


@dataclass(frozen=True)
class Exercise:
    name: str
    checker: Callable[[Any], None]
    hint: str  #: close to the solution: shown after repeated wrong answers or on request
    nudge: str  #: where to look: shown after the first wrong answer
    task: str | None  #: the task in one sentence, restated while it is not attempted yet


_EXERCISES: dict[str, Exercise] = {}
#: Wrong answers so far in this Python session, per exercise: they decide nudge or hint.
_WRONG_ATTEMPTS: Counter[str] = Counter()


def exercise(
    name: str, hint: str, *, nudge: str | None = None, task: str | None = None
) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """Register ``checker`` as the check for exercise ``name`` (e.g. ``"01.reshape"``).

    ``hint`` is near the solution, ``nudge`` (optional) only points the way, ``task`` (optional)
    restates what to do for a learner who has not started.
    """

    def register(checker: Callable[[Any], None]) -> Callable[[Any], None]:
        if name in _EXERCISES:
            raise ValueError(f"exercise {name!r} is registered twice")
        _EXERCISES[name] = Exercise(name, checker, hint, nudge or DEFAULT_NUDGE, task)
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


def _lookup(name: str) -> Exercise:
    _load_all_checkers()
    if name not in _EXERCISES:
        close = difflib.get_close_matches(name, _EXERCISES, n=3)
        suggestion = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"There is no exercise called {name!r}.{suggestion}")
    return _EXERCISES[name]


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


def hint(name: str) -> None:
    """Print the hint for exercise ``name`` — close to the solution, so try a little first.

    Raises ValueError for a name no lesson uses (with the closest names).
    """
    print(f"hint for {name}: {_lookup(name).hint}")


def _not_started(ex: Exercise, status: str, todo: str) -> CheckResult:
    """Restate the task of an exercise not attempted yet (no hint: nothing to correct yet)."""
    task = f"your task: {ex.task}." if ex.task else "your task is in the text above this cell."
    print(f"{FAIL_MARK} {ex.name}: {status} — {task}\n  {todo}, then run this cell again.")
    return CheckResult(ex.name, False)


def _wrong(ex: Exercise, reason: str, *, demo: bool = False) -> CheckResult:
    if not demo:
        _WRONG_ATTEMPTS[ex.name] += 1
    if _WRONG_ATTEMPTS[ex.name] <= 1:
        help_line = f"  nudge: {ex.nudge}  (stuck? hint({ex.name!r}) shows more)"
    else:
        help_line = f"  hint: {ex.hint}"
    print(f"{FAIL_MARK} {ex.name}: {reason}\n{help_line}")
    return CheckResult(ex.name, False)


class WatchedFunction:
    """A learner's function as checkers call it: the same results, and ``returned_none`` set once
    a call returned None — so a checker that then fails (``float(None)``: TypeError) is reported
    as the forgotten ``return`` it is. Wraps plain functions and any callable whose class sets
    ``learner_function = True`` (the grader's stand-in for a function run elsewhere)."""

    def __init__(self, function: Callable[..., Any]) -> None:
        functools.update_wrapper(self, function)
        self.function = function
        self.returned_none = False

    @staticmethod
    def wraps(answer: Any) -> bool:
        """Whether ``answer`` is a function :class:`WatchedFunction` should watch."""
        plain = isinstance(answer, types.FunctionType | types.BuiltinFunctionType)
        return plain or getattr(type(answer), "learner_function", False) is True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.function(*args, **kwargs)
        if result is None:
            self.returned_none = True
        return result


def run_checker(ex: Exercise, answer: Any) -> None:
    """Run ``ex``'s checker on ``answer``: returns when right, raises Incorrect (what is wrong,
    :data:`FUNCTION_RETURNED_NONE` when the learner's function returned None and the checker
    then failed on it), NotImplementedError for a stub, or whatever a learner's function raised.
    The one way both :func:`check` and the grader judge an answer."""
    watched = WatchedFunction(answer) if WatchedFunction.wraps(answer) else None
    try:
        ex.checker(answer if watched is None else watched)
    except (Incorrect, NotImplementedError):
        raise
    except Exception as error:
        if watched is not None and watched.returned_none:
            raise Incorrect(FUNCTION_RETURNED_NONE) from error
        raise


def check(name: str, answer: Any, *, demo: bool = False) -> CheckResult:
    """Check a learner's ``answer`` to exercise ``name``; print ✓ or ✗ and return the result
    (truthy when it passed). ``demo=True`` marks a lesson's own deliberately wrong example: its ✗
    is shown with the nudge but is not counted as the learner's attempt (attempts decide when the
    hint replaces the nudge). Raises ValueError only for an unknown exercise name.

    >>> import torch
    >>> check("01.reshape", torch.arange(12).reshape(3, 4))
    ✓ 01.reshape: correct!
    CheckResult('01.reshape', passed=True)"""
    ex = _lookup(name)
    if answer is Ellipsis:
        return _not_started(ex, "not answered yet", "replace the `...` with your code")
    try:
        run_checker(ex, answer)
    except Incorrect as wrong:
        return _wrong(ex, str(wrong), demo=demo)
    except NotImplementedError:
        return _not_started(
            ex, "not implemented yet", "replace `raise NotImplementedError(...)` with your code"
        )
    except Exception as error:  # a learner's function may fail in any way; report, don't crash
        return _wrong(ex, f"your answer raised {type(error).__name__}: {error}", demo=demo)
    print(f"{PASS_MARK} {name}: correct!")
    return CheckResult(name, True)


# -- helpers for writing checkers ---------------------------------------------------------------


def expect(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition`` holds."""
    if not condition:
        raise Incorrect(message)


def expect_not_none(value: Any, what: str = "your answer") -> None:
    """Fail with "did you forget `return`?" when ``value`` is None."""
    expect(value is not None, f"{what} {FORGOT_RETURN}")


def expect_callable(answer: Any, name: str, exercise_name: str) -> None:
    """Fail unless the learner passed their function itself (not the result of calling it)."""
    expect(
        callable(answer),
        f"pass your function itself: check('{exercise_name}', {name}), not its result",
    )


def _is_array(value: Any) -> bool:
    return isinstance(value, torch.Tensor | np.ndarray | np.generic)


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    expect_not_none(value, what)
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise Incorrect(
            f"{what} should be a tensor (or a number), got {type(value).__name__}"
        ) from error


def expect_shape(answer: Any, shape: tuple[int, ...], what: str = "your answer") -> None:
    """Fail unless ``answer`` is a tensor (or array) of exactly ``shape``."""
    tensor = _as_tensor(answer, what)
    expect(
        tuple(tensor.shape) == tuple(shape),
        f"{what} has shape {tuple(tensor.shape)}, expected {tuple(shape)}",
    )


def _common_dtype(got: torch.dtype, want: torch.dtype) -> torch.dtype:
    """A dtype both values convert to without changing any value a learner could mean.

    Whole numbers and booleans meet as int64 (``True == 1``); as soon as either side is floating
    point both become float64, so ``0.5`` never rounds to ``0`` nor ``0.1`` to ``True``. Two
    floating-point values meet at the *lower* precision of the two: a float64 answer (numpy, say)
    equals a float32 expected value when it rounds to it.
    """
    if got.is_complex or want.is_complex:
        return torch.complex128
    if got.is_floating_point and want.is_floating_point:
        return min(got, want, key=lambda dtype: torch.finfo(dtype).bits)
    if got.is_floating_point or want.is_floating_point:
        return torch.float64
    return torch.int64


def _first_difference(got: torch.Tensor, want: torch.Tensor, differs: torch.Tensor) -> str:
    """Say where ``got`` and ``want`` (the original, uncast values) first differ."""
    if got.dim() == 0:
        return f"is {got.item()!r}, expected {want.item()!r}"
    position = differs.nonzero()[0].tolist()
    index = ", ".join(map(str, position))
    count = int(differs.sum())
    return (
        f"differs from the expected value at {count} of {differs.numel()} positions; the first "
        f"is [{index}]: {got[tuple(position)].item()!r} instead of {want[tuple(position)].item()!r}"
    )


def expect_equal(answer: Any, expected: Any, what: str = "your answer") -> None:
    """Fail unless ``answer`` equals ``expected`` exactly (tensors and arrays elementwise).

    Values are compared, not types: ``view(3, -1)``, a numpy array or a float tensor of whole
    numbers equal an int64 tensor with the same numbers, and ``1.0``/``0.0`` equal ``True``/
    ``False`` — but no value is rounded or cast to make it fit (``0.5`` is not ``0``).
    ``what`` names the value *and the input the checker used*, for the message.
    """
    expect_not_none(answer, what)
    if not (_is_array(answer) or _is_array(expected)):
        same = answer == expected
        if isinstance(same, bool) and same:
            return
        message = f"{what} is {answer!r}, expected {expected!r}"
        if isinstance(answer, list | tuple) and isinstance(expected, list | tuple):
            pairs = zip(answer, expected, strict=False)
            first = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
            if first is not None:
                message += f"; the first difference is at position {first}"
            elif len(answer) != len(expected):
                message += f" ({len(answer)} items instead of {len(expected)})"
        raise Incorrect(message)
    got, want = _as_tensor(answer, what), _as_tensor(expected, "the expected value")
    expect_shape(got, tuple(want.shape), what)
    dtype = _common_dtype(got.dtype, want.dtype)
    got_common, want_common = got.to(dtype), want.to(dtype)
    differs = got_common != want_common
    if dtype.is_floating_point:
        differs &= ~(got_common.isnan() & want_common.isnan())
    if bool(differs.any()):
        raise Incorrect(f"{what} {_first_difference(got, want, differs)}")


def expect_close(
    answer: Any, expected: Any, *, rtol: float = 1e-4, atol: float = 1e-6, what: str = "your answer"
) -> None:
    """Fail unless ``answer`` is within the tolerances of ``expected`` (numbers, tensors, arrays):
    ``|answer - expected| <= atol + rtol·|expected|`` elementwise, as ``torch.allclose``."""
    got = _as_tensor(answer, what).to(torch.float64)
    want = _as_tensor(expected, "the expected value").to(torch.float64)
    expect_shape(got, tuple(want.shape), what)
    outside = ~torch.isclose(got, want, rtol=rtol, atol=atol)
    if bool(outside.any()):
        if got.numel() == 1:
            raise Incorrect(f"{what} is {got.item():.6g}, expected {want.item():.6g}")
        position = outside.nonzero()[0].tolist()
        index = ", ".join(map(str, position))
        raise Incorrect(
            f"{what} is off by up to {(got - want).abs().max().item():.3g}; the first value "
            f"outside the tolerance is [{index}]: {got[tuple(position)].item():.6g} instead of "
            f"{want[tuple(position)].item():.6g}"
        )
