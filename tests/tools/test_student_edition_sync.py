"""The student edition: solutions gone, stubs friendly, notebooks valid — and a learner's edits
never lost when it is made again (``make lab``, ``make student``, ``git pull``)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.diagrams import chart_output
from course_lib.paths import REPO_ROOT
from tools import colab
from tools.student_edition import (
    MANIFEST,
    SolutionMarkerError,
    _match_refresh,
    build_student_edition,
    charts_drawn,
    main,
    make_student_notebook,
    publish_student_branch,
    strip_solutions,
    sync_student_edition,
)

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BLOCK = re.compile(r"# BEGIN SOLUTION\n(.*?)\n\s*# END SOLUTION", re.S)


def test_assignment_blocks_keep_their_names() -> None:
    solution = "# BEGIN SOLUTION\nanswer = x + 1\nother: int = 2\n# END SOLUTION"
    source = f"x = 1\n{solution}\ncheck('a', answer)"
    assert strip_solutions(source) == (
        "x = 1\nanswer = ...  # your code here\nother = ...  # your code here\ncheck('a', answer)"
    )


def test_function_bodies_raise_at_their_indentation() -> None:
    source = "def f(x):\n    # BEGIN SOLUTION\n    y = x * 2\n    return y\n    # END SOLUTION\n"
    stub = strip_solutions(source)
    assert stub == 'def f(x):\n    raise NotImplementedError("your code here")'
    namespace: dict = {}
    exec(stub, namespace)
    with pytest.raises(NotImplementedError, match="your code here"):
        namespace["f"](1)


def test_indented_statements_other_than_assignments_raise() -> None:
    solution = "    # BEGIN SOLUTION\n    x.backward()\n    g = x.grad\n    # END SOLUTION"
    source = f"for x in xs:\n{solution}"
    stub = 'for x in xs:\n    raise NotImplementedError("your code here")'
    assert strip_solutions(source) == stub


def test_top_level_blocks_keep_only_their_final_answer() -> None:
    solution = "# BEGIN SOLUTION\nx = torch.ones(3)\nx.backward()\nanswer = x.grad\n# END SOLUTION"
    stub = strip_solutions(f"{solution}\ncheck('01.gradient', answer)")
    assert stub == "answer = ...  # your code here\ncheck('01.gradient', answer)"
    namespace: dict = {"check": lambda name, value: value}
    exec(stub, namespace)  # runs without raising: Run All carries on to the check
    assert namespace["answer"] is Ellipsis


@pytest.mark.parametrize("final", ["x.backward()", "print(answer)", "self.answer = x.grad"])
def test_top_level_blocks_must_end_with_the_answer(final: str) -> None:
    source = f"x = 1\n# BEGIN SOLUTION\nanswer = x + 1\n{final}\n# END SOLUTION"
    with pytest.raises(SolutionMarkerError, match="line 2 is at the top level.*'answer = ...'"):
        strip_solutions(source)


@pytest.mark.parametrize(
    "broken",
    [
        "# BEGIN SOLUTION\nx = 1\n",
        "x = 1\n# END SOLUTION",
        "# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION",
    ],
)
def test_unbalanced_markers_are_errors(broken: str) -> None:
    with pytest.raises(SolutionMarkerError):
        strip_solutions(broken)


def test_markdown_answers_become_a_stub_at_their_indentation() -> None:
    """A lesson's questions keep their text; each answer (HTML-comment markers, which the
    instructor edition does not render) becomes "*Your answer here.*" inside its list item."""
    questions = (
        "## Check your understanding\n\n"
        "1. **Predict, then run.** What happens?\n"
        "   <!-- BEGIN SOLUTION -->\n"
        "   *Answer.* It leaks.\n\n"
        "   More detail.\n"
        "   <!-- END SOLUTION -->\n"
        "2. Why?\n"
        "   <!-- BEGIN SOLUTION -->\n"
        "   *Answer.* Because.\n"
        "   <!-- END SOLUTION -->"
    )
    assert strip_solutions(questions, markdown=True) == (
        "## Check your understanding\n\n"
        "1. **Predict, then run.** What happens?\n"
        "   *Your answer here.*\n"
        "2. Why?\n"
        "   *Your answer here.*"
    )


@pytest.mark.parametrize(
    "broken",
    [
        "1. Q\n   <!-- BEGIN SOLUTION -->\n   A\n",
        "1. Q\n   A\n   <!-- END SOLUTION -->",
        "<!-- BEGIN SOLUTION -->\n<!-- BEGIN SOLUTION -->\n<!-- END SOLUTION -->",
    ],
)
def test_unbalanced_markdown_markers_are_errors(broken: str) -> None:
    with pytest.raises(SolutionMarkerError):
        strip_solutions(broken, markdown=True)


def test_student_edition_of_every_lesson(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert f"Student edition: {len(NOTEBOOKS)} notebooks in {tmp_path / 'notebooks'}" in out
    assert out.count(": created") == len(NOTEBOOKS)
    for original_path in NOTEBOOKS:
        student_path = tmp_path / "notebooks" / original_path.name
        student = nbformat.read(student_path, as_version=4)
        nbformat.validate(student)
        original = nbformat.read(original_path, as_version=4)
        assert len(student.cells) == len(original.cells)
        text = "\n".join(cell.source for cell in student.cells)
        assert not re.search(r"^\s*# (BEGIN|END) SOLUTION\s*$", text, re.M)
        assert not re.search(r"<!-- (BEGIN|END) SOLUTION -->", text)
        code_text = "\n".join(c.source for c in student.cells if c.cell_type == "code")
        assert "NBVAL_CHECK_OUTPUT" not in code_text
        for cell in student.cells:
            if cell.cell_type == "code":  # only a protocol chart keeps its figure
                drawn = [chart_output(name) for name in charts_drawn(cell.source) or []]
                assert [o.data for o in cell.outputs] == drawn
                assert cell.execution_count is None
        solutions = [block for cell in original.cells for block in BLOCK.findall(cell.source)]
        assert solutions, f"{original_path.name} has no exercises"
        student_code = "\n".join(c.source for c in student.cells if c.cell_type == "code")
        for block in solutions:
            assert block.strip() not in student_code, f"{original_path.name}: a solution survived"
        assert student_code.count("# your code here") + student_code.count(
            '"your code here"'
        ) >= len(solutions)


def test_errors_name_the_notebook_and_cell(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# A lesson"),
        nbformat.v4.new_code_cell("# BEGIN SOLUTION\nmodel.fit()\n# END SOLUTION"),
    ]
    path = tmp_path / "99_broken.ipynb"
    nbformat.write(notebook, path)
    with pytest.raises(SolutionMarkerError, match=r"^99_broken.ipynb: cell 1: the solution block"):
        build_student_edition([path], tmp_path / "out")


def test_returns_one_path_per_lesson(tmp_path: Path) -> None:
    written = build_student_edition(NOTEBOOKS[:1], tmp_path / "x")
    assert written == [tmp_path / "x" / "notebooks" / NOTEBOOKS[0].name]


# -- the learner's folder: make lab / make student never lose an edit ----------------------------


def _make_commands(target: str, **variables: str) -> list[list[str]]:
    """The commands ``make TARGET`` would run, as argument lists (install taken as done)."""
    assignments = [f"{name}={value}" for name, value in variables.items()]
    # Under ``make test`` this runs inside another make: drop the outer make's variables so the
    # dry run prints only commands (no "make[1]: Entering directory" lines).
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"}
    }
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.installed", target, *assignments],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return [shlex.split(line) for line in dry_run.stdout.splitlines() if line.strip()]


def test_make_lab_opens_the_student_edition_and_lab_solutions_the_instructors() -> None:
    # JupyterLab refuses to start as root without --allow-root: make adds it for root only
    as_root = ["--allow-root"] if os.geteuid() == 0 else []
    student = _make_commands("lab", STUDENT_DIR="/tmp/learner")
    assert student[0][1:] == ["-m", "tools.student_edition", "--out", "/tmp/learner"]
    assert student[-1][1:] == ["lab", *as_root, "/tmp/learner/notebooks/"]
    assert _make_commands("lab-solutions")[-1][1:] == ["lab", *as_root, "notebooks/"]
    refresh = _make_commands("student", REFRESH="05")[0]
    assert refresh[-2:] == ["--refresh", "05"]


def test_the_learners_folder_is_outside_git() -> None:
    """``git pull`` cannot overwrite what git does not track."""
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "student/notebooks/00_welcome.ipynb"], cwd=REPO_ROOT
    )
    assert ignored.returncode == 0, "add /student/ to .gitignore"
    assert "student" in _make_commands("lab")[0]


def _run_make_student(folder: Path) -> str:
    """Run what ``make student STUDENT_DIR=folder`` runs, with this Python."""
    [command] = _make_commands("student", STUDENT_DIR=str(folder))
    result = subprocess.run(
        [sys.executable, *command[1:]], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout


def _edit(path: Path, text: str) -> None:
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(text))
    nbformat.write(notebook, path)


def test_rerunning_make_student_keeps_the_learners_edits(tmp_path: Path) -> None:
    first = _run_make_student(tmp_path)
    assert first.count(": created") == len(NOTEBOOKS)
    lesson = tmp_path / "notebooks" / "00_welcome.ipynb"
    _edit(lesson, "my_answer = 42  # the learner's work")
    edited = lesson.read_bytes()
    (tmp_path / "notebooks" / NOTEBOOKS[1].name).unlink()  # a deleted lesson comes back

    again = _run_make_student(tmp_path)
    assert lesson.read_bytes() == edited, "make student overwrote the learner's notebook"
    assert "00_welcome.ipynb: kept: you edited it" in again
    assert f"{NOTEBOOKS[1].name}: created" in again
    assert "--refresh NN" in again


def test_refresh_is_explicit_and_keeps_a_backup(tmp_path: Path) -> None:
    [(lesson, _)] = sync_student_edition(NOTEBOOKS[:1], tmp_path)
    fresh = lesson.read_bytes()
    _edit(lesson, "mine = 1")
    edited = lesson.read_bytes()
    with pytest.raises(ValueError, match="'xyz' matches no lesson"):
        sync_student_edition(NOTEBOOKS[:2], tmp_path, refresh=["xyz"])
    assert lesson.read_bytes() == edited

    [(_, status)] = sync_student_edition(NOTEBOOKS[:1], tmp_path, refresh=["00"])
    assert status.startswith("refreshed: your copy is in backups/00_welcome.")
    assert lesson.read_bytes() == fresh
    backups = list((tmp_path / "notebooks" / "backups").glob("00_welcome.*.ipynb"))
    assert [backup.read_bytes() for backup in backups] == [edited]
    _edit(lesson, "mine = 2")
    sync_student_edition(NOTEBOOKS[:1], tmp_path, refresh=["00"])  # same second: a second backup
    assert len(list((tmp_path / "notebooks" / "backups").iterdir())) == 2


def test_refresh_takes_a_number_without_its_leading_zero(tmp_path: Path) -> None:
    """``make student REFRESH=5`` means lesson 05, as ``REFRESH=05`` does."""
    lessons = [path for path in NOTEBOOKS if path.name[:2] in ("05", "15")]
    sync_student_edition(lessons, tmp_path)
    lesson = tmp_path / "notebooks" / lessons[0].name
    fresh = lesson.read_bytes()
    _edit(lesson, "mine = 1")
    statuses = dict(sync_student_edition(lessons, tmp_path, refresh=["5"]))
    assert statuses[lesson].startswith(f"refreshed: your copy is in backups/{lesson.stem}.")
    assert lesson.read_bytes() == fresh


def test_refresh_names_one_lesson(tmp_path: Path) -> None:
    twins = [tmp_path / "05_a.ipynb", tmp_path / "05_b.ipynb"]
    with pytest.raises(ValueError, match=r"'05' matches 2 lessons \(05_a.ipynb, 05_b.ipynb\)"):
        _match_refresh(["05"], twins)
    assert _match_refresh(["05_b", "05_a.ipynb"], twins) == {"05_a.ipynb", "05_b.ipynb"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--refresh", "xyz"], "--refresh 'xyz' matches no lesson: give a lesson's number"),
        (["--refresh", "99"], "--refresh '99' matches no lesson"),
        (["notebooks/99_missing.ipynb"], "no such lesson file: notebooks/99_missing.ipynb"),
    ],
)
def test_a_name_matching_nothing_gets_one_line_not_a_traceback(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    """What ``make student REFRESH=xyz`` runs: exit status 2, one line on stderr, no files."""
    command = [sys.executable, "-m", "tools.student_edition", "--out", str(tmp_path), *arguments]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"python -m tools.student_edition: error: {message}")
    assert not (tmp_path / "notebooks").exists()


def test_untouched_notebooks_follow_the_lesson_edited_ones_do_not(tmp_path: Path) -> None:
    """A lesson fixed upstream reaches a learner who has not started it — and only them."""
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    for source in NOTEBOOKS[:2]:
        shutil.copy(source, lessons)
    originals = sorted(lessons.iterdir())
    out = tmp_path / "learner"
    sync_student_edition(originals, out)
    touched = out / "notebooks" / originals[1].name
    _edit(touched, "started = True")
    for lesson in originals:  # the instructor improves both lessons
        notebook = nbformat.read(lesson, as_version=4)
        notebook.cells.append(nbformat.v4.new_markdown_cell("A new closing remark."))
        nbformat.write(notebook, lesson)

    statuses = dict((path.name, status) for path, status in sync_student_edition(originals, out))
    assert statuses == {originals[0].name: "updated", originals[1].name: "kept: you edited it"}
    untouched = nbformat.read(out / "notebooks" / originals[0].name, as_version=4)
    assert untouched.cells[-1].source == "A new closing remark."
    assert "started = True" in nbformat.read(touched, as_version=4).cells[-1].source
    manifest = json.loads((out / "notebooks" / MANIFEST).read_text())
    assert set(manifest) == {lesson.name for lesson in originals}


def test_a_broken_lesson_writes_nothing(tmp_path: Path) -> None:
    broken = nbformat.read(NOTEBOOKS[0], as_version=4)
    broken.cells.append(nbformat.v4.new_code_cell("# BEGIN SOLUTION\nx = 1"))
    path = tmp_path / "99_broken.ipynb"
    nbformat.write(broken, path)
    with pytest.raises(SolutionMarkerError, match="99_broken"):
        sync_student_edition([NOTEBOOKS[1], path], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- Colab: the student edition opens the student edition ----------------------------------------


def test_student_notebooks_open_the_student_branch_in_colab(tmp_path: Path) -> None:
    address = colab.load_address()
    for path in build_student_edition(NOTEBOOKS, tmp_path):
        notebook = nbformat.read(path, as_version=4)
        badge = colab.colab_url(address, path.name, "student")
        assert badge in notebook.cells[0].source and f"/{address.branch}/" not in badge
        install = notebook.cells[1].source
        assert f"--branch {address.student_branch} " in install, install
        assert f"--branch {address.branch} " not in install


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_publish_commits_the_student_edition_without_touching_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value in {
        "GIT_AUTHOR_NAME": "Instructor",
        "GIT_AUTHOR_EMAIL": "instructor@example.org",
        "GIT_COMMITTER_NAME": "Instructor",
        "GIT_COMMITTER_EMAIL": "instructor@example.org",
    }.items():
        monkeypatch.setenv(variable, value)
    repo = tmp_path / "course"
    (repo / "notebooks").mkdir(parents=True)
    for source in NOTEBOOKS[:2]:
        shutil.copy(source, repo / "notebooks")
    (repo / "README.md").write_text("# course\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "lessons")
    (repo / "README.md").write_text("# uncommitted work\n")
    status_before = _git(repo, "status", "--porcelain")

    first = publish_student_branch(repo, "student")
    assert _git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert _git(repo, "status", "--porcelain") == status_before
    assert (repo / "README.md").read_text() == "# uncommitted work\n"
    assert _git(repo, "show", "student:README.md") == "# course"
    for source in NOTEBOOKS[:2]:
        text = _git(repo, "show", f"student:notebooks/{source.name}")
        published = nbformat.reads(text, as_version=4)
        code = "\n".join(c.source for c in published.cells if c.cell_type == "code")
        assert not re.search(r"^\s*# BEGIN SOLUTION\s*$", code, re.M)
        assert "raise NotImplementedError" in code or "# your code here" in code
        assert "blob/student/notebooks/" in published.cells[0].source
        assert "# BEGIN SOLUTION" in (repo / "notebooks" / source.name).read_text()

    second = publish_student_branch(repo, "student")  # publishing again adds a commit on top
    assert _git(repo, "rev-parse", "student^") == first and second != first
    _git(repo, "checkout", "-q", "student")
    with pytest.raises(ValueError, match="is checked out"):
        publish_student_branch(repo, "student")


@pytest.mark.parametrize(
    ("source", "charts"),
    [
        (
            '# chart\nfrom course_lib.diagrams import show_protocol\nshow_protocol("beaver")',
            ["beaver"],
        ),
        ('show_protocol("dh_psi")\nshow_protocol("pir")', ["dh_psi", "pir"]),
        ("from course_lib.diagrams import show_protocol", None),  # draws nothing
        ('show_protocol("beaver")\nanswer = 42', None),  # computes something too
        ("show_protocol(name)", None),  # not a literal: depends on the learner's kernel
        ('show_protocol("no such chart")', None),
        ('from course_lib.diagrams import show_protocol as s\ns("beaver")', None),
        ('import os\nshow_protocol("beaver")', None),
        ("show_protocol(", None),
    ],
)
def test_a_cell_that_only_draws_charts_gets_them_drawn_afresh(
    source: str, charts: list[str] | None
) -> None:
    """Never the stored output: an instructor's cell whose output was computed by a redefined
    show_protocol (or is stale) cannot pass anything but the course's own chart to learners."""
    stored = nbformat.v4.new_output("display_data", data={"text/plain": "ANSWER: 0x1234"})
    printed = nbformat.v4.new_output("stream", name="stdout", text="hello\n")
    cell = nbformat.v4.new_code_cell(source, outputs=[stored, printed], execution_count=3)
    (student,) = make_student_notebook(nbformat.v4.new_notebook(cells=[cell])).cells
    assert charts_drawn(source) == charts
    assert student.execution_count is None
    assert [o.data for o in student.outputs] == [chart_output(name) for name in charts or []]
    assert "ANSWER" not in json.dumps(student.outputs)


def test_the_student_edition_shows_the_lessons_protocol_charts() -> None:
    path = REPO_ROOT / "notebooks" / "16_smpc_arithmetic.ipynb"
    student = make_student_notebook(nbformat.read(path, as_version=4), path.name)
    charts = [c for c in student.cells if c.cell_type == "code" and "show_protocol(" in c.source]
    assert charts and all(
        [o.data for o in c.outputs] == [chart_output(n) for n in charts_drawn(c.source) or []]
        for c in charts
    )
    others = [c for c in student.cells if c.cell_type == "code" and c not in charts]
    assert not any(c.outputs for c in others)
