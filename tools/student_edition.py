"""Make the student edition of the course: ``python -m tools.student_edition``.

Instructors keep one set of notebooks with solutions. An exercise's solution sits between two
marker lines::

    # BEGIN SOLUTION
    answer = x.reshape(4, 3)
    # END SOLUTION

The student edition (written to ``build/student/`` by default) replaces each such block with a stub:

- a block made only of assignments (``answer = ...``) keeps the names:
  ``answer = ...  # your code here``
  — the exercise's ``check`` then says "not answered yet";
- a block at the top level of a cell that does more than assign (``y = f(x); y.backward();
  answer = x.grad``) keeps only the names its *last* statement assigns — the answer — so the
  learner's *Run All* never stops there; such a block must end with that assignment;
- any other block (typically a function body) becomes
  ``raise NotImplementedError("your code here")``
  at the block's indentation — the ``check`` then says "not implemented yet".

Outputs and execution counts are cleared, ``# NBVAL_CHECK_OUTPUT`` markers removed, and every
notebook is validated against the nbformat schema before it is written.
"""

from __future__ import annotations

import argparse
import ast
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path

import nbformat

from course_lib.paths import REPO_ROOT

__all__ = [
    "SolutionMarkerError",
    "strip_solutions",
    "make_student_notebook",
    "build_student_edition",
]

BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
STUB_COMMENT = "# your code here"
MARKDOWN_STUB = "*Your answer here.*"
CHECK_OUTPUT_MARKER = "# NBVAL_CHECK_OUTPUT"


class SolutionMarkerError(ValueError):
    """A solution block the student edition cannot stub: a ``# BEGIN SOLUTION`` without its
    ``# END SOLUTION`` (or the other way round), or a top-level block without a final answer."""


def _assigned_names(statement: ast.stmt) -> list[str] | None:
    """The names a plain assignment binds (``a = b = 1``, ``a: int = 1``), else None."""
    if isinstance(statement, ast.Assign):
        targets = statement.targets
    elif isinstance(statement, ast.AnnAssign):
        targets = [statement.target]
    else:
        return None
    if not all(isinstance(target, ast.Name) for target in targets):
        return None
    return [target.id for target in targets]


def _stub_for(block: list[str], indent: str, line: int) -> list[str]:
    """The student's replacement for one solution block of code (``line``: where it begins).

    A ``raise`` is only safe inside a function (it fires when the learner's function is called, and
    ``check`` reports it kindly): at the top level of a cell it would stop *Run All*, so a top-level
    block keeps the names of its final assignment instead — or is refused if it has none.
    """
    source = textwrap.dedent("\n".join(block))
    try:
        statements = ast.parse(source).body
    except SyntaxError:
        statements = []  # e.g. a fragment of a larger statement: fall back to raising
    assigned = [_assigned_names(statement) for statement in statements]
    if statements and all(names is not None for names in assigned):
        names = [name for names in assigned for name in names]
    elif not indent and assigned and assigned[-1]:
        names = assigned[-1]
    elif not indent:
        raise SolutionMarkerError(
            f"the solution block at line {line} is at the top level of its cell, so it must end "
            "by assigning the answer (e.g. 'answer = ...'): the student's copy keeps that "
            "assignment as 'answer = ...' rather than raising an error that stops Run All"
        )
    else:
        return [f'{indent}raise NotImplementedError("your code here")']
    return [f"{indent}{name} = ...  {STUB_COMMENT}" for name in dict.fromkeys(names)]


def strip_solutions(source: str, *, markdown: bool = False) -> str:
    """Replace every solution block in one cell's ``source`` with its stub."""
    out: list[str] = []
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        begin = BEGIN.match(lines[i])
        if END.match(lines[i]):
            raise SolutionMarkerError(f"'# END SOLUTION' without a matching BEGIN at line {i + 1}")
        if not begin:
            out.append(lines[i])
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if END.match(lines[j])), None)
        if end is None:
            raise SolutionMarkerError(f"'# BEGIN SOLUTION' at line {i + 1} has no '# END SOLUTION'")
        block = lines[i + 1 : end]
        if any(BEGIN.match(line) for line in block):
            raise SolutionMarkerError(f"nested '# BEGIN SOLUTION' inside the block at line {i + 1}")
        out += [MARKDOWN_STUB] if markdown else _stub_for(block, begin.group(1), i + 1)
        i = end + 1
    return "\n".join(out)


def _make_student_cell(cell: nbformat.NotebookNode) -> None:
    """Stub ``cell``'s solutions in place; a code cell also loses its outputs and NBVAL marker."""
    if cell.cell_type == "code":
        lines = strip_solutions(cell.source).splitlines()
        cell.source = "\n".join(line for line in lines if line.strip() != CHECK_OUTPUT_MARKER)
        cell.outputs = []
        cell.execution_count = None
    elif cell.cell_type == "markdown":
        cell.source = strip_solutions(cell.source, markdown=True)


def make_student_notebook(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``notebook`` with solutions stubbed out and all outputs cleared."""
    student = nbformat.from_dict(notebook)
    for index, cell in enumerate(student.cells):
        try:
            _make_student_cell(cell)
        except SolutionMarkerError as error:
            raise SolutionMarkerError(f"cell {index}: {error}") from None
    nbformat.validate(student)
    return student


def build_student_edition(
    notebooks: Iterable[Path] | None = None, out_dir: Path | None = None
) -> list[Path]:
    """Write the student edition of ``notebooks`` (default: all lessons) into ``out_dir``."""
    notebooks = sorted(notebooks or (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise FileNotFoundError("no lesson notebooks found")
    out_dir = Path(out_dir or REPO_ROOT / "build" / "student")
    (out_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        try:
            student = make_student_notebook(nbformat.read(path, as_version=4))
        except SolutionMarkerError as error:
            raise SolutionMarkerError(f"{Path(path).name}: {error}") from None
        target = out_dir / "notebooks" / Path(path).name
        nbformat.write(student, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="lessons to convert (default: all)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: build/student)"
    )
    args = parser.parse_args(argv)
    written = build_student_edition(args.notebooks or None, args.out)
    print(f"Wrote {len(written)} student notebooks to {written[0].parent}")


if __name__ == "__main__":
    main()
