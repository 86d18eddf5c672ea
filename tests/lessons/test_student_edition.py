"""The student edition *runs*: a learner who opens an untouched student notebook and runs it top to
bottom sees one friendly ✗ per exercise ("not answered yet" / "not implemented yet", with the
task) — never a traceback, never a hint before a try, never a ✓ they did not earn.

Each lesson's student copy is built into a temporary folder and executed there by a fresh kernel
of this environment, offline and single-threaded (the kernel inherits this process's environment,
including the temporary ``COURSE_DATA_DIR`` set in ``conftest.py``). This costs about as long as
running the lessons themselves; ``--durations`` reports the time per lesson.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from course_lib.paths import REPO_ROOT
from tools.student_edition import build_student_edition

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_SECONDS = 900

SOLUTION_BLOCK = re.compile(r"^\s*# BEGIN SOLUTION\s*$", re.M)
CHECK_CALL = re.compile(r"""\bcheck\(\s*["'](\d\d\.\w+)["']""")
FRIENDLY_FAIL = re.compile(r"^✗ (\d\d\.\w+): not (?:answered|implemented) yet —", re.M)
PASSED = re.compile(r"^✓ (\d\d\.\w+):", re.M)
ANSWER_RAISED = "your answer raised"


def stubbed_exercises(lesson: nbformat.NotebookNode) -> tuple[list[str], int]:
    """The exercises whose solutions the student edition stubs — the names ``check``-ed in code
    cells holding a solution block — and how many solution blocks those cells hold."""
    cells = [
        c.source for c in lesson.cells if c.cell_type == "code" and SOLUTION_BLOCK.search(c.source)
    ]
    names = [name for source in cells for name in CHECK_CALL.findall(source)]
    return names, sum(len(SOLUTION_BLOCK.findall(source)) for source in cells)


def execute(notebook_path: Path) -> nbformat.NotebookNode:
    """Run ``notebook_path`` top to bottom in its own folder; errors are kept as cell outputs."""
    notebook = nbformat.read(notebook_path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(notebook_path.parent)}},
    )
    return client.execute()


def tracebacks(notebook: nbformat.NotebookNode) -> list[str]:
    """One line per error output: the cell's number, first source line and the exception."""
    return [
        f"cell {index} ({cell.source.splitlines()[0] if cell.source else ''!r}): "
        f"{output.ename}: {output.evalue}"
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]


def printed(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook's code cells printed to stdout, in order."""
    return "".join(
        output.text
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream" and output.name == "stdout"
    )


def test_every_lesson_is_covered() -> None:
    assert len(NOTEBOOKS) >= 20 and NOTEBOOKS[0].name.startswith("00_")


@pytest.mark.parametrize("lesson_path", NOTEBOOKS, ids=lambda path: path.stem)
def test_untouched_student_notebook_runs_with_friendly_checks(
    lesson_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    stubbed, blocks = stubbed_exercises(nbformat.read(lesson_path, as_version=4))
    assert stubbed, f"{lesson_path.name} has no exercises"
    assert len(stubbed) == blocks, "each solution block needs its own check(...) in its cell"

    [student_path] = build_student_edition([lesson_path], tmp_path)
    executed = execute(student_path)

    errors = tracebacks(executed)
    assert not errors, "the untouched student notebook raised:\n" + "\n".join(errors)
    output = printed(executed)
    assert sorted(FRIENDLY_FAIL.findall(output)) == sorted(stubbed), output
    assert not set(PASSED.findall(output)) & set(stubbed), output
    assert ANSWER_RAISED not in output, output
    # Untouched stubs get their task restated: no hint before the learner has tried.
    for block in re.split(r"^(?=[✓✗] )", output, flags=re.M):
        if FRIENDLY_FAIL.match(block):
            assert "your task" in block and "hint" not in block and "nudge" not in block, block
