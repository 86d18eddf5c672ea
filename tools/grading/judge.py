"""Judge one submission's answers in a process the submission never ran in.

``python -m tools.grading.judge LESSON PLAN.json ANSWERS_DIR RESULTS.jsonl --seed N`` imports the
course's checkers and the instructor's reference solutions *before* it loads any answer, then for
each exercise loads the answer that :mod:`tools.grading.execute` copied out of the submission's
kernel and judges it:

1. the answer must be of the right kind: a plain function for a function exercise; plain data
   (numbers, strings, tensors, numpy arrays, lists/tuples/dicts of them, objects of classes
   importable from torch/numpy/course_lib) for a value — and a function's results must be plain
   data too (or one of its own arguments), so an object whose ``==`` always says yes earns nothing;
2. the course's own checker (``course_lib.exercises``) must accept it;
3. the hidden cases of :mod:`tools.grading.hidden` must pass;
4. the grader's own code must be unchanged afterwards (an answer runs in this process: one that
   replaces a checker or helper of ``course_lib`` earns nothing, and no later answer is judged).

One JSON line per exercise goes to RESULTS.jsonl as soon as it is judged.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import pickle
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course_lib.exercises import Incorrect
from course_lib.exercises._registry import _lookup
from tools.grading.hidden import HIDDEN
from tools.grading.lesson import reference_solutions

_TRUSTED_PACKAGES = {"builtins", "torch", "numpy", "course_lib", "collections", "fractions"}
_CONTAINERS = (list, tuple, dict, set, frozenset)


def _importable(cls: type) -> bool:
    """Whether ``cls`` is the class its name says, importable from a trusted package — not a
    class the submission defined (cloudpickle recreates those; they cannot be imported)."""
    if cls.__module__.split(".")[0] not in _TRUSTED_PACKAGES:
        return False
    try:
        found: Any = importlib.import_module(cls.__module__)
        for part in cls.__qualname__.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return False
    return found is cls


def plain(value: Any, allowed: tuple[Any, ...] = (), depth: int = 20) -> bool:
    """Whether ``value`` is plain data (see the module docstring) or one of ``allowed``;
    containers nested deeper than ``depth`` are not."""
    if value is None or any(value is item for item in allowed):
        return True
    cls = type(value)
    if cls in _CONTAINERS:
        items = [*value.keys(), *value.values()] if cls is dict else list(value)
        return depth > 0 and all(plain(item, allowed, depth - 1) for item in items)
    if isinstance(value, np.ndarray) and value.dtype == object:
        return False
    return _importable(cls)


def _guarded(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``function``, raising Incorrect when it returns something that is not plain data."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        if not plain(result, (*args, *kwargs.values())):
            raise Incorrect(
                f"{name}(...) returned a {type(result).__name__}; answers must be numbers, "
                "tensors, arrays or lists of them"
            )
        return result

    return call


class GraderError(Exception):
    """The instructor's reference solution failed: a fault of the grader, not of the answer."""


def _trusted(reference: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(reference)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return reference(*args, **kwargs)
        except Exception as error:
            raise GraderError(f"{type(error).__name__}: {error}") from error

    return call


def judge(
    exercise: dict[str, Any],
    answers: Path,
    checker: Callable[[Any], None],
    reference: Callable[..., Any] | None,
    generator: torch.Generator,
) -> tuple[bool, str]:
    """Judge one exercise's copied answer: ``(passed, reason)``."""
    name, variable = exercise["name"], exercise["answer"]
    path = answers / f"{name}.pkl"
    if not path.exists():
        return False, f"no answer: `{variable}` was not defined when its check cell ran"
    try:
        with path.open("rb") as file:
            answer = pickle.load(file)
    except Exception as error:  # an answer that cannot be loaded earns nothing, whatever it is
        return False, f"your answer could not be loaded ({type(error).__name__}: {error})"
    if answer is Ellipsis:
        return False, "not answered (`...`)"
    if exercise["function"]:
        if not isinstance(answer, types.FunctionType):
            return False, f"`{variable}` should be a function, got {type(answer).__name__}"
        answer = _guarded(answer, variable)
    elif not plain(answer):
        return False, f"`{variable}` is a {type(answer).__name__}, not a number, tensor or array"
    try:
        checker(answer)
        case = HIDDEN.get(name)
        if case is not None and reference is not None:
            try:
                case(answer, _trusted(reference), generator)
            except Incorrect as wrong:
                return False, f"hidden test: {wrong}"
            except GraderError as error:
                return True, f"correct (course check; hidden tests not run: grader error {error})"
    except Incorrect as wrong:
        return False, str(wrong)
    except NotImplementedError:
        return False, "not implemented (`raise NotImplementedError`)"
    except Exception as error:  # a learner's function may fail in any way
        return False, f"your answer raised {type(error).__name__}: {error}"
    return True, "correct" + (" (course check and hidden tests)" if name in HIDDEN else "")


def fingerprint() -> dict[tuple[str, str], tuple[int, ...]]:
    """The grader's own code as loaded now: for each attribute of each loaded ``course_lib`` and
    ``tools.grading`` module, the object's identity (and its code's, for a function)."""
    prints = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith(("course_lib", "tools.grading")):
            continue
        for attribute, value in list(vars(module).items()):
            code = getattr(value, "__code__", None)
            prints[module_name, attribute] = (id(value), id(code))
    return prints


def judge_all(
    plan: list[dict[str, Any]], answers: Path, lesson: str, seed: int
) -> Iterator[tuple[str, bool, str]]:
    """Judge every exercise of ``plan``: ``(name, passed, reason)`` in turn. The course's checkers
    and the references are loaded before the first answer; an answer that replaced any of the
    grader's functions or module attributes (checked after each exercise) earns nothing, and
    nothing after it is judged."""
    checkers = {exercise["name"]: _lookup(exercise["name"]).checker for exercise in plan}
    references = reference_solutions(lesson)
    baseline = fingerprint()
    tampered = False
    for exercise in plan:
        name = exercise["name"]
        if tampered:
            yield name, False, "not judged: an earlier answer changed the grader's code"
            continue
        generator = torch.Generator().manual_seed(seed)
        passed, reason = judge(exercise, answers, checkers[name], references.get(name), generator)
        now = fingerprint()
        changed = sorted(f"{m}.{a}" for m, a in baseline if now.get((m, a)) != baseline[m, a])
        if changed:
            tampered = True
            passed = False
            reason = f"your answer changed the grader's code ({', '.join(changed[:3])}): no marks"
        yield name, passed, reason


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lesson")
    parser.add_argument("plan", type=Path)
    parser.add_argument("answers", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    plan = json.loads(args.plan.read_text(encoding="utf-8"))
    with args.results.open("w", encoding="utf-8") as results:
        for name, passed, reason in judge_all(plan, args.answers, args.lesson, args.seed):
            results.write(json.dumps({"exercise": name, "passed": passed, "reason": reason}) + "\n")
            results.flush()


if __name__ == "__main__":
    main()
