"""The student edition *runs*, as in Colab and on another CPU: one run per lesson, three checks.

A learner who opens an untouched student notebook and runs it top to bottom sees one friendly ✗
per exercise ("not answered yet" / "not implemented yet", with the task) — never a traceback, never
a hint before a try, never a ✓ they did not earn.

Each lesson's student copy is built into a temporary folder and executed there by a fresh kernel
of this environment, offline and single-threaded (the kernel inherits this process's environment,
including the temporary ``COURSE_DATA_DIR`` set in ``conftest.py``), and that same run checks:

(a) **only the lesson's own extra.** The kernel cannot import the packages of the extras the
    lesson's install cell does not install (``colab_imports/sitecustomize.py``: in Colab they are
    absent), so a lesson that needs them fails here, naming the package. The instructor's solution
    blocks do not run in the student edition, so ``test_solution_blocks_import_only_the_lessons_
    extra`` reads their imports instead (and ``test_lesson_extras.py`` runs them, blocked);
(b) **the other CPU setting.** The kernel runs on other CPU kernels than nbval's run of the
    instructor edition: when this session runs under the second setting
    (``ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default``, what ``make test`` sets), the
    kernel takes the machine's own instruction set; otherwise (``make test CPU=native``) it takes
    the second setting;
(c) **checked outputs hold there.** Every ``# NBVAL_CHECK_OUTPUT`` cell of the instructor edition
    that the student edition runs unchanged — not a solution cell, and reading nothing a solution
    computed (``tools.site.pages.revealing_cells``) — must print what the instructor edition
    stored, compared as nbval compares it (:func:`nbval_view`).

This costs about as long as running the lessons themselves; ``--durations`` reports the time per
lesson.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import os
import re
import textwrap
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from nbclient import NotebookClient
from nbval.plugin import (
    coalesce_streams,
    find_comment_markers,
    find_metadata_tags,
    transform_streams_for_comparison,
)

from course_lib.paths import REPO_ROOT
from tools import colab
from tools.site.pages import revealing_cells
from tools.student_edition import BEGIN, END, build_student_edition

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_SECONDS = 900
BLOCKER = REPO_ROOT / "tests" / "lessons" / "colab_imports" / "sitecustomize.py"
#: The second CPU setting (issue #20): oneDNN without AVX, ATen's portable kernels.
SECOND_CPU_SETTING = {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"}


def other_cpu_setting(environ: Mapping[str, str]) -> dict[str, str | None]:
    """The CPU setting a student-edition kernel takes: the one this session (and so nbval's kernels)
    does *not* run under. ``None`` removes a variable: the machine's own instruction set."""
    session_is_second = all(environ.get(k) == v for k, v in SECOND_CPU_SETTING.items())
    if session_is_second:
        return dict.fromkeys(SECOND_CPU_SETTING)
    return dict(SECOND_CPU_SETTING)


SOLUTION_BLOCK = re.compile(r"^\s*# BEGIN SOLUTION\s*$", re.M)
CHECK_CALL = re.compile(r"""\bcheck\(\s*["'](\d\d\.\w+)["']""")
FRIENDLY_FAIL = re.compile(r"^✗ (\d\d\.\w+): not (?:answered|implemented) yet —", re.M)
PASSED = re.compile(r"^✓ (\d\d\.\w+):", re.M)
ANSWER_RAISED = "your answer raised"
BLOCKED = "blocked to simulate Colab"
MARKER = "# NBVAL_CHECK_OUTPUT"
#: Appended to the student notebook: proves the kernel ran under the second setting, blocked.
SETTINGS_PROBE = (
    "import sys, torch\n"
    "print('settings probe:', torch.backends.cpu.get_cpu_capability(),\n"
    "      any(type(f).__name__ == 'ImportBlocker' for f in sys.meta_path))"
)

#: What nbval leaves out of a comparison: ``IPyNbFile.skip_compare`` in nbval/plugin.py, with the
#: images that it adds when run without ``--nbdime`` (as here); no sanitizing patterns are set.
NBVAL_SKIP_COMPARE = frozenset(
    {
        "metadata",
        "traceback",
        "prompt_number",
        "output_type",
        "name",
        "execution_count",
        "application/vnd.jupyter.widget-view+json",
        "image/png",
        "image/jpeg",
    }
)


def _load_blocker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("course_colab_imports", BLOCKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


blocker = _load_blocker()


@functools.cache
def blocked_imports(extra: str) -> frozenset[str]:
    return frozenset(blocker.blocked_imports(extra))


def lesson_extra(lesson: nbformat.NotebookNode) -> str:
    return colab.install_extra(lesson.cells[1].source)


def stubbed_exercises(lesson: nbformat.NotebookNode) -> tuple[list[str], int]:
    """The exercises whose solutions the student edition stubs — the names ``check``-ed in code
    cells holding a solution block — and how many solution blocks those cells hold."""
    cells = [
        c.source for c in lesson.cells if c.cell_type == "code" and SOLUTION_BLOCK.search(c.source)
    ]
    names = [name for source in cells for name in CHECK_CALL.findall(source)]
    return names, sum(len(SOLUTION_BLOCK.findall(source)) for source in cells)


def solution_blocks(lesson: nbformat.NotebookNode) -> list[str]:
    """The code between each ``# BEGIN SOLUTION`` / ``# END SOLUTION`` pair of the code cells."""
    blocks = []
    for cell in lesson.cells:
        if cell.cell_type != "code":
            continue
        block: list[str] | None = None
        for line in cell.source.splitlines():
            if BEGIN.match(line):
                block = []
            elif END.match(line) and block is not None:
                blocks.append(textwrap.dedent("\n".join(block)))
                block = None
            elif block is not None:
                block.append(line)
    return blocks


def imported_packages(source: str) -> set[str]:
    """The top-level packages ``source`` imports (absolute imports, anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.partition(".")[0])
    return found


def checked_cells(lesson: nbformat.NotebookNode) -> list[int]:
    """Indices of the code cells nbval compares (``# NBVAL_CHECK_OUTPUT`` or the
    ``nbval-check-output`` tag; not ``NBVAL_SKIP``), found with nbval's own marker parsers."""
    indices = []
    for index, cell in enumerate(lesson.cells):
        if cell.cell_type != "code":
            continue
        options = dict(find_metadata_tags(cell.metadata))
        options.update(find_comment_markers(cell.source))
        if options.get("check") and not options.get("skip"):
            indices.append(index)
    return indices


def nbval_view(outputs: list[nbformat.NotebookNode]) -> dict[str, list[object]]:
    """A cell's outputs as nbval compares them (``IPyNbCell.compare_outputs``): streams of the same
    name merged and ``\\r``/``\\b`` applied (``coalesce_streams``), then every field — each MIME
    type of ``data`` and each stream by its name — mapped to the list of its values in order,
    without the fields of :data:`NBVAL_SKIP_COMPARE`. Two outputs pass nbval exactly when their
    views are equal."""
    outputs = transform_streams_for_comparison(coalesce_streams(copy.deepcopy(outputs)))
    view: dict[str, list[object]] = defaultdict(list)
    for output in outputs:
        for key, value in output.items():
            if key in NBVAL_SKIP_COMPARE:
                continue
            if key == "data":
                for mime, data in value.items():
                    if mime not in NBVAL_SKIP_COMPARE:
                        view[mime].append(data)
            else:
                view[key].append(value)
    return dict(view)


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


def test_nbval_view_compares_as_nbval_does() -> None:
    """Split streams, ``\\r`` rewrites and images' bytes do not count; text does, stderr too."""
    stream = nbformat.v4.new_output
    image = {"image/png": "AAAA", "text/plain": "<Figure size 640x480 with 1 Axes>"}
    stored = [
        stream("stream", name="stdout", text="loss 0.25\n"),
        stream("display_data", data=image),
    ]
    rerun = [
        stream("stream", name="stdout", text="loss 0.2"),
        stream("stream", name="stdout", text="\rloss 0.25\n"),
        stream("display_data", data={**image, "image/png": "BBBB"}),
    ]
    assert nbval_view(rerun) == nbval_view(stored)
    assert nbval_view([stream("stream", name="stdout", text="loss 0.26\n"), stored[1]]) != (
        nbval_view(stored)
    )
    assert nbval_view([*stored, stream("stream", name="stderr", text="warning\n")]) != (
        nbval_view(stored)
    )


@pytest.mark.parametrize("lesson_path", NOTEBOOKS, ids=lambda path: path.stem)
def test_solution_blocks_import_only_the_lessons_extra(lesson_path: Path) -> None:
    """(a) for the code the student edition does not run: a solution may import nothing that the
    lesson's install cell does not install."""
    lesson = nbformat.read(lesson_path, as_version=4)
    extra = lesson_extra(lesson)
    blocks = solution_blocks(lesson)
    assert blocks, f"{lesson_path.name} has no solution blocks"
    for block in blocks:
        outside = imported_packages(block) & blocked_imports(extra)
        assert not outside, (
            f"{lesson_path.name} installs course_lib[{extra}], but a solution imports "
            f"{sorted(outside)}:\n{block}"
        )


@pytest.mark.parametrize("lesson_path", NOTEBOOKS, ids=lambda path: path.stem)
def test_untouched_student_notebook_runs_with_friendly_checks(
    lesson_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lesson = nbformat.read(lesson_path, as_version=4)
    extra = lesson_extra(lesson)
    kernel_env = blocker.blocking_environment(blocked_imports(extra), os.environ)
    cpu_setting = other_cpu_setting(os.environ)
    for name, value in {
        "PYTHONPATH": kernel_env["PYTHONPATH"],
        blocker.ENV_VAR: kernel_env[blocker.ENV_VAR],
        **cpu_setting,
        "COURSE_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    stubbed, blocks = stubbed_exercises(lesson)
    assert stubbed, f"{lesson_path.name} has no exercises"
    assert len(stubbed) == blocks, "each solution block needs its own check(...) in its cell"

    [student_path] = build_student_edition([lesson_path], tmp_path)
    student = nbformat.read(student_path, as_version=4)
    student.cells.append(nbformat.v4.new_code_cell(SETTINGS_PROBE))
    nbformat.write(student, student_path)
    executed = execute(student_path)
    probe = executed.cells.pop()
    # a late line from an earlier cell's background thread may land in this cell too: read ours
    lines = "".join(o.get("text", "") for o in probe.outputs).splitlines()
    [probe_line] = [line for line in lines if line.startswith("settings probe:")] or [""]
    assert probe_line, ("the settings probe printed nothing", probe.outputs)
    capability, blocking = probe_line.split()[2:]
    second = cpu_setting["ATEN_CPU_CAPABILITY"] is not None
    assert blocking == "True" and (capability == "DEFAULT") == second, (
        f"the kernel did not run under the intended CPU setting {cpu_setting} with the blocker",
        probe.outputs,
    )

    errors = tracebacks(executed)
    blocked = [error for error in errors if BLOCKED in error]
    assert not blocked, (
        f"{lesson_path.name} installs course_lib[{extra}] in Colab but imports another extra's "
        "package:\n" + "\n".join(blocked)
    )
    assert not errors, "the untouched student notebook raised:\n" + "\n".join(errors)
    output = printed(executed)
    assert sorted(FRIENDLY_FAIL.findall(output)) == sorted(stubbed), output
    assert not set(PASSED.findall(output)) & set(stubbed), output
    assert ANSWER_RAISED not in output, output
    # Untouched stubs get their task restated: no hint before the learner has tried.
    for block in re.split(r"^(?=[✓✗] )", output, flags=re.M):
        if FRIENDLY_FAIL.match(block):
            assert "your task" in block and "hint" not in block and "nudge" not in block, block

    # (c) the checked cells the student edition runs as the instructor's, under the second setting
    revealing = set(revealing_cells(lesson))
    differing = []
    for index in checked_cells(lesson):
        if index in revealing:
            continue
        stored, rerun = lesson.cells[index], executed.cells[index]
        unmarked = [line for line in stored.source.splitlines() if line.strip() != MARKER]
        assert rerun.source.splitlines() == unmarked, "the student edition changed the cell"
        if nbval_view(rerun.outputs) != nbval_view(stored.outputs):
            differing.append(
                f"cell {index} ({stored.source.splitlines()[1:2]}):\n"
                f"  stored: {nbval_view(stored.outputs)}\n"
                f"  now:    {nbval_view(rerun.outputs)}"
            )
    setting = " ".join(f"{k}={v}" for k, v in cpu_setting.items()) if second else "native"
    assert not differing, (
        f"{lesson_path.name}: checked cells print otherwise under {setting}:\n"
        + "\n".join(differing)
    )
