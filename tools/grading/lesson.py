"""What the grader needs to know about a lesson, read from the instructor's notebook.

An exercise's answer is the variable (or function) the instructor's notebook passes to
``check("NN.name", NAME)``; it is copied out of a submission's kernel right after the cell that
holds that check (matched by cell id, which the student edition keeps, else by the exercise name
in the cell's source). A function exercise (``NAME`` is a ``def`` in the instructor's notebook)
also gets a *reference*: the instructor's solution, used by the hidden cases.
"""

from __future__ import annotations

import ast
import contextlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nbformat

from course_lib.exercises._registry import registered_exercises
from course_lib.paths import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
_CHECK_CALL = re.compile(r"""check\(\s*["'](\d\d)\.""")


@dataclass(frozen=True)
class Exercise:
    """One graded exercise: its name, the answer's variable name, and the instructor's cell id
    holding its ``check`` (None if the cell has no id); ``function``: the answer is a ``def``."""

    name: str
    answer: str
    cell_id: str | None
    function: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def lesson_notebook(lesson: str) -> Path:
    """The instructor's notebook of ``lesson`` ("05" or "5"). ValueError if there is none."""
    if not lesson.isdigit():
        raise ValueError(f"a lesson is a number like 05, got {lesson!r}")
    matches = sorted(NOTEBOOKS.glob(f"{int(lesson):02d}_*.ipynb"))
    if len(matches) != 1:
        raise ValueError(f"no lesson {int(lesson):02d} in {NOTEBOOKS} (found {len(matches)})")
    return matches[0]


def _parsed_cells(notebook: nbformat.NotebookNode) -> list[tuple[Any, ast.Module]]:
    """Each code cell with its syntax tree; cells with IPython syntax (``!``, ``%``) are skipped."""
    cells = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        try:
            cells.append((cell, ast.parse(cell.source)))
        except SyntaxError:
            continue
    return cells


def lesson_exercises(lesson: str, *, complete: bool = True) -> list[Exercise]:
    """The exercises of ``lesson`` in notebook order. With ``complete``, ValueError when the
    registry has an exercise the instructor's notebook never checks with a plain name (the grader
    could not find its answer)."""
    notebook = nbformat.read(lesson_notebook(lesson), as_version=4)
    prefix = f"{int(lesson):02d}."
    cells = _parsed_cells(notebook)
    defined = {
        node.name for _, tree in cells for node in tree.body if isinstance(node, ast.FunctionDef)
    }
    found: dict[str, Exercise] = {}
    for cell, tree in cells:
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "check"
                and len(node.args) == 2
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and isinstance(node.args[1], ast.Name)
            ):
                continue
            name, answer = str(node.args[0].value), node.args[1].id
            if name.startswith(prefix) and name not in found:
                found[name] = Exercise(name, answer, cell.get("id"), answer in defined)
    missing = sorted(set(e for e in registered_exercises() if e.startswith(prefix)) - set(found))
    if missing and complete:
        raise ValueError(
            f"lesson {prefix[:-1]}'s notebook never calls check(name, variable) for {missing}"
        )
    return list(found.values())


def infer_lesson(notebooks: list[Path]) -> str:
    """The one lesson whose exercises the ``notebooks``' code cells check (``check("05.…")`` or
    ``check('05.…')``). ValueError if none or several, or for a file that is not a notebook."""
    lessons: set[str] = set()
    for path in notebooks:
        try:
            notebook = nbformat.read(path, as_version=4)
        except Exception as error:  # nbformat raises several kinds for a file that is no notebook
            raise ValueError(
                f"{path} is not a Jupyter notebook ({type(error).__name__})"
            ) from error
        for cell in notebook.cells:
            if cell.cell_type == "code":
                lessons.update(_CHECK_CALL.findall(cell.source))
    if len(lessons) != 1:
        found = ", ".join(sorted(lessons)) or "none"
        raise ValueError(
            f"cannot tell which lesson these submissions are (lessons checked: {found}); "
            "pass --lesson NN"
        )
    return lessons.pop()


def reference_solutions(lesson: str) -> dict[str, Callable[..., Any]]:
    """The instructor's solution of each function exercise of ``lesson``, by exercise name: the
    ``def`` run after the notebook's top-level imports (those that fail are skipped), in a
    namespace of its own."""
    notebook = nbformat.read(lesson_notebook(lesson), as_version=4)
    cells = _parsed_cells(notebook)
    namespace: dict[str, Any] = {"__name__": "reference_solutions"}
    imports = [
        node
        for _, tree in cells
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    for statement in imports:  # one by one: a lesson's unrelated import may fail here
        with contextlib.suppress(ImportError):
            exec(compile(ast.Module([statement], []), "<lesson imports>", "exec"), namespace)
    defs = {
        node.name: node
        for _, tree in cells
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
    }
    references = {}
    for exercise in lesson_exercises(lesson, complete=False):
        if exercise.function:
            module = ast.Module([defs[exercise.answer]], [])
            exec(compile(module, f"<solution of {exercise.name}>", "exec"), namespace)
            references[exercise.name] = namespace[exercise.answer]
    return references
