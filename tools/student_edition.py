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

Outputs and execution counts are cleared — except that a cell that only draws a protocol chart
(:func:`course_lib.diagrams.show_protocol`) gets the chart drawn afresh, so learners see it before
running anything —
``# NBVAL_CHECK_OUTPUT`` markers removed, the Colab
badge and install cell point at the published student branch (:mod:`tools.colab`), and every
notebook is validated against the nbformat schema before it is written.

**A learner's work is never overwritten.** The edition is written into a folder the learner owns
(``student/`` for ``make lab``; git ignores it, so ``git pull`` never touches it). Each run:

- creates the notebooks that are missing;
- updates a notebook the learner has not changed since it was written (a manifest,
  ``.student-edition.json``, records each written file's SHA-256), so fixes to a lesson arrive;
- keeps every notebook the learner has changed, and says so;
- replaces a changed notebook only when asked by name (``--refresh 05_local_dp``), after moving
  the learner's copy to ``backups/NAME.<time>.ipynb``.

``--publish`` commits the student edition of every lesson to the student branch named in
``pyproject.toml`` — the rest of the tree as in ``HEAD`` — without touching the working tree,
the index or the current branch; ``git push origin student`` then publishes it.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path

import nbformat

from course_lib.diagrams import PROTOCOLS, chart_output
from course_lib.paths import REPO_ROOT
from tools import colab

__all__ = [
    "SolutionMarkerError",
    "strip_solutions",
    "make_student_notebook",
    "build_student_edition",
    "sync_student_edition",
    "publish_student_branch",
]

#: Where ``make lab`` / ``make student`` put the learner's notebooks (git-ignored).
LEARNER_DIR = REPO_ROOT / "student"
MANIFEST = ".student-edition.json"

BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
#: In markdown (answers to a lesson's questions) the markers may also be HTML comments, which the
#: instructor edition does not render.
MARKDOWN_BEGIN = re.compile(r"^(\s*)(?:# BEGIN SOLUTION|<!-- BEGIN SOLUTION -->)\s*$")
MARKDOWN_END = re.compile(r"^\s*(?:# END SOLUTION|<!-- END SOLUTION -->)\s*$")
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
    names = [target.id for target in targets if isinstance(target, ast.Name)]
    return names if len(names) == len(targets) else None  # None: a target is not a plain name


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
    plain = [names for names in assigned if names is not None]  # the plain assignments' names
    if statements and len(plain) == len(assigned):
        names = [name for bound in plain for name in bound]
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
    """Replace every solution block in one cell's ``source`` with its stub. In a markdown cell
    (``markdown=True``) the block is an answer, replaced by ``*Your answer here.*`` at the
    block's indentation (so a list item stays a list item)."""
    begin_marker, end_marker = (MARKDOWN_BEGIN, MARKDOWN_END) if markdown else (BEGIN, END)
    out: list[str] = []
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        begin = begin_marker.match(lines[i])
        if end_marker.match(lines[i]):
            raise SolutionMarkerError(f"'END SOLUTION' without a matching BEGIN at line {i + 1}")
        if not begin:
            out.append(lines[i])
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if end_marker.match(lines[j])), None)
        if end is None:
            raise SolutionMarkerError(f"'BEGIN SOLUTION' at line {i + 1} has no 'END SOLUTION'")
        block = lines[i + 1 : end]
        if any(begin_marker.match(line) for line in block):
            raise SolutionMarkerError(f"nested 'BEGIN SOLUTION' inside the block at line {i + 1}")
        if markdown:
            out.append(f"{begin.group(1)}{MARKDOWN_STUB}")
        else:
            out += _stub_for(block, begin.group(1), i + 1)
        i = end + 1
    return "\n".join(out)


def charts_drawn(source: str) -> list[str] | None:
    """The protocol charts a code cell draws, if it does nothing but import and call
    ``show_protocol`` with the literal names of course charts; else None. The student edition
    draws those charts afresh from :mod:`course_lib.diagrams` — never copies a stored output, so
    nothing computed in the instructor's kernel (an answer, a redefined ``show_protocol``) can
    reach learners through such a cell."""
    try:
        statements = ast.parse(source).body
    except SyntaxError:
        return None
    charts = []
    for node in statements:
        if isinstance(node, ast.ImportFrom):
            if node.module != "course_lib.diagrams" or any(
                alias.name != "show_protocol" or alias.asname is not None for alias in node.names
            ):
                return None
            continue
        call = node.value if isinstance(node, ast.Expr) else None
        if not (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == "show_protocol"
            and not call.keywords
            and len(call.args) == 1
            and isinstance(call.args[0], ast.Constant)
            and call.args[0].value in PROTOCOLS
        ):
            return None
        charts.append(call.args[0].value)
    return charts or None


def _make_student_cell(cell: nbformat.NotebookNode) -> None:
    """Stub ``cell``'s solutions in place; a code cell also loses its outputs (a cell that only
    draws protocol charts gets them drawn afresh) and its NBVAL marker."""
    if cell.cell_type == "code":
        charts = charts_drawn(cell.source)
        lines = strip_solutions(cell.source).splitlines()
        cell.source = "\n".join(line for line in lines if line.strip() != CHECK_OUTPUT_MARKER)
        cell.outputs = [
            nbformat.v4.new_output("display_data", data=chart_output(name)) for name in charts or []
        ]
        cell.execution_count = None
    elif cell.cell_type == "markdown":
        cell.source = strip_solutions(cell.source, markdown=True)


def make_student_notebook(
    notebook: nbformat.NotebookNode, name: str | None = None
) -> nbformat.NotebookNode:
    """A copy of ``notebook`` with solutions stubbed out and outputs cleared (protocol charts
    drawn afresh, see :func:`charts_drawn`); given the
    lesson's file ``name``, its Colab badge and install cell open the student branch."""
    student = nbformat.from_dict(notebook)
    for index, cell in enumerate(student.cells):
        try:
            _make_student_cell(cell)
        except SolutionMarkerError as error:
            raise SolutionMarkerError(f"cell {index}: {error}") from None
    if name is not None:
        colab.apply_to_notebook(student, name, colab.load_address(), "student")
    nbformat.validate(student)
    return student


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _student_bytes(path: Path) -> bytes:
    try:
        student = make_student_notebook(nbformat.read(path, as_version=4), Path(path).name)
    except SolutionMarkerError as error:
        raise SolutionMarkerError(f"{Path(path).name}: {error}") from None
    return (nbformat.writes(student) + "\n").encode("utf-8")


def _lesson_paths(notebooks: Iterable[Path] | None) -> list[Path]:
    paths = sorted(notebooks or (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError("no lesson notebooks found")
    return [Path(path) for path in paths]


def _match_refresh(names: Iterable[str], lessons: list[Path]) -> set[str]:
    """The lesson files ``--refresh`` asks for, by full name or unique prefix (``05``,
    ``05_local``); a bare number may drop its leading zero (``5``). ValueError, in one line,
    for a name that matches no lesson or several."""
    chosen = set()
    for name in names:
        prefix = name.zfill(2) if name.isdigit() else name
        matches = [p.name for p in lessons if p.name == prefix or p.name.startswith(prefix)]
        if not matches:
            numbers = f"{lessons[0].name[:2]}–{lessons[-1].name[:2]}"
            raise ValueError(
                f"--refresh {name!r} matches no lesson: give a lesson's number ({numbers}, e.g. "
                f"{lessons[0].name[:2]}) or the start of its file name ({lessons[0].stem})"
            )
        if len(matches) > 1:
            raise ValueError(
                f"--refresh {name!r} matches {len(matches)} lessons ({', '.join(matches)}): "
                "name exactly one"
            )
        chosen.add(matches[0])
    return chosen


def sync_student_edition(
    notebooks: Iterable[Path] | None = None,
    out_dir: Path | None = None,
    *,
    refresh: Iterable[str] = (),
) -> list[tuple[Path, str]]:
    """Write the student edition of ``notebooks`` (default: all lessons) into
    ``out_dir/notebooks/`` (default ``student/``) without losing a learner's edits.

    Returns ``(path, status)`` per lesson; status is ``"created"``, ``"updated"`` (unchanged by
    the learner, replaced by the newer lesson), ``"unchanged"``, ``"kept: you edited it"``, or
    ``"refreshed: your copy is in backups/…"`` for a lesson named in ``refresh`` (file name or a
    unique prefix such as ``"05"``). Every lesson is converted before anything is written, so a
    broken lesson (:class:`SolutionMarkerError`) changes nothing.
    """
    lessons = _lesson_paths(notebooks)
    to_refresh = _match_refresh(refresh, lessons)
    folder = Path(out_dir or LEARNER_DIR) / "notebooks"
    new_content = {path.name: _student_bytes(path) for path in lessons}
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    report = []
    for name, content in new_content.items():
        target = folder / name
        if not target.exists():
            status = "created"
        else:
            current = target.read_bytes()
            if current == content:
                report.append((target, "unchanged"))
                manifest[name] = _sha256(content)
                continue
            if manifest.get(name) == _sha256(current):
                status = "updated"
            elif name in to_refresh:
                backups = folder / "backups"
                backups.mkdir(exist_ok=True)
                stamp = time.strftime("%Y%m%d-%H%M%S")
                backup = backups / f"{target.stem}.{stamp}.ipynb"
                for copy in range(2, 1000):  # two refreshes within a second keep both copies
                    if not backup.exists():
                        break
                    backup = backups / f"{target.stem}.{stamp}-{copy}.ipynb"
                backup.write_bytes(current)
                status = f"refreshed: your copy is in {backup.relative_to(folder)}"
            else:
                report.append((target, "kept: you edited it"))
                continue
        target.write_bytes(content)
        manifest[name] = _sha256(content)
        report.append((target, status))
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return report


def build_student_edition(
    notebooks: Iterable[Path] | None = None, out_dir: Path | None = None
) -> list[Path]:
    """:func:`sync_student_edition` without refreshes; returns the student notebooks' paths."""
    return [path for path, _ in sync_student_edition(notebooks, out_dir)]


def _git(
    *args: str, cwd: Path, env: dict[str, str] | None = None, data: bytes | None = None
) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, input=data, capture_output=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.decode().strip()}")
    return result.stdout.decode().strip()


def publish_student_branch(repo: Path = REPO_ROOT, branch: str | None = None) -> str:
    """Commit the student edition of ``repo``'s committed lessons (``HEAD``) to ``branch``
    (default: ``student-branch`` from pyproject.toml); returns the new commit's id.

    The commit holds ``HEAD``'s tree with every ``notebooks/NN_*.ipynb`` replaced by its student
    copy, on top of the branch's previous commit. Only git objects and the branch ref are written
    (through a temporary index): the working tree, the index and the checked-out branch are left
    alone. Publish with ``git push origin <branch>``.
    """
    branch = branch or colab.load_address().student_branch
    if _git("rev-parse", "--abbrev-ref", "HEAD", cwd=repo) == branch:
        raise ValueError(f"{branch!r} is checked out: publish from the instructor's branch")
    head = _git("rev-parse", "HEAD", cwd=repo)
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        _git("read-tree", head, cwd=repo, env=env)
        listed = _git("ls-tree", "--name-only", head, "notebooks/", cwd=repo).splitlines()
        for path in sorted(p for p in listed if re.fullmatch(r"notebooks/\d\d_\w+\.ipynb", p)):
            lesson = Path(scratch) / Path(path).name
            lesson.write_bytes(_git("show", f"{head}:{path}", cwd=repo).encode("utf-8"))
            blob = _git("hash-object", "-w", "--stdin", cwd=repo, data=_student_bytes(lesson))
            _git("update-index", "--cacheinfo", f"100644,{blob},{path}", cwd=repo, env=env)
        tree = _git("write-tree", cwd=repo, env=env)
    parent = (
        subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
            cwd=repo,
            capture_output=True,
            check=False,
        )
        .stdout.decode()
        .strip()
    )
    message = f"Student edition of {head[:12]} (python -m tools.student_edition --publish)"
    commit = _git("commit-tree", tree, *(["-p", parent] if parent else []), "-m", message, cwd=repo)
    _git("update-ref", f"refs/heads/{branch}", commit, *([parent] if parent else []), cwd=repo)
    return commit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.student_edition", description=__doc__.splitlines()[0]
    )
    parser.add_argument("notebooks", nargs="*", type=Path, help="lessons to convert (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: student)")
    parser.add_argument(
        "--refresh",
        nargs="+",
        default=[],
        metavar="LESSON",
        help="replace these edited lessons (name or prefix, e.g. 05) with a fresh copy; "
        "your copy is kept in backups/",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="commit the student edition of HEAD to the student branch (see pyproject.toml)",
    )
    args = parser.parse_args(argv)
    if args.publish:
        if args.notebooks or args.out or args.refresh:
            parser.error("--publish converts every committed lesson; it takes no other option")
        commit = publish_student_branch()
        branch = colab.load_address().student_branch
        print(f"Committed {commit[:12]} to {branch}; publish it: git push origin {branch}")
        return
    missing = [str(path) for path in args.notebooks if not path.is_file()]
    if missing:
        parser.exit(2, f"{parser.prog}: error: no such lesson file: {', '.join(missing)}\n")
    try:
        report = sync_student_edition(args.notebooks or None, args.out, refresh=args.refresh)
    except ValueError as error:  # a --refresh that names no lesson, a broken solution marker
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    for path, status in report:
        if status != "unchanged":
            print(f"  {path.name}: {status}")
    kept = sum(status.startswith("kept") for _, status in report)
    print(f"Student edition: {len(report)} notebooks in {report[0][0].parent}")
    if kept:
        print(
            f"{kept} notebook(s) you edited were kept as they are. To replace one with the "
            "current lesson (your copy goes to backups/): "
            "python -m tools.student_edition --refresh NN"
        )


if __name__ == "__main__":
    main()
