"""One address for every Colab badge, install cell and clone link (tools/colab.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

from course_lib.paths import REPO_ROOT
from tools import colab
from tools.check_wheels import COLAB_PINS, colab_requirements

ADDRESS = colab.load_address()
FILES = colab.default_files()


def test_the_address_lives_in_pyproject() -> None:
    table = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["private-ai"]
    assert (
        colab.CourseAddress(table["repository"], table["branch"], table["student-branch"])
        == ADDRESS
    )


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_link_follows_the_address(path: Path) -> None:
    """Fails until ``python -m tools.colab`` has been run after changing a badge or the address."""
    assert colab.rewrite_files([path], ADDRESS, check_only=True) == [], (
        f"{path.name} disagrees with [tool.private-ai]: run python -m tools.colab {path.name}"
    )


def test_no_other_copy_of_the_address() -> None:
    """Outside pyproject.toml, the address appears only where tools.colab writes it."""
    written_by_the_tool = {p.resolve() for p in FILES} | {REPO_ROOT / "pyproject.toml"}
    sources = [
        *REPO_ROOT.glob("*.md"),
        *REPO_ROOT.glob("*.cff"),
        *REPO_ROOT.glob("course_lib/**/*.py"),
        *REPO_ROOT.glob("tools/**/*.py"),
    ]
    strays = [
        str(p.relative_to(REPO_ROOT))
        for p in sources
        if p.resolve() not in written_by_the_tool and ADDRESS.repository in p.read_text()
    ]
    assert not strays, f"the repository address is written out by hand in {strays}"


def _lesson(name: str, install: str) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    badge = "https://colab.research.google.com/github/someone/old/blob/dev/notebooks/"
    notebook.cells = [
        nbformat.v4.new_markdown_cell(
            f"# 07 · X\n\n[![Open In Colab](https://colab.research.google.com/assets/"
            f"colab-badge.svg)]({badge}{name})\n\nText."
        ),
        nbformat.v4.new_code_cell(install),
        nbformat.v4.new_code_cell("x = 1"),
    ]
    return notebook


def test_a_fork_rewrites_every_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("README.md", "INSTALLATION.md", "CITATION.cff", "pyproject.toml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    (tmp_path / "notebooks").mkdir()
    lesson = tmp_path / "notebooks" / "07_pate.ipynb"
    install = colab.install_cell(ADDRESS, "instructor", "[dp]")
    nbformat.write(_lesson("07_pate.ipynb", install), lesson)
    monkeypatch.setattr(colab, "PYPROJECT", tmp_path / "pyproject.toml")
    monkeypatch.setattr(colab, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(
        colab,
        "default_files",
        lambda: [
            tmp_path / "README.md",
            tmp_path / "INSTALLATION.md",
            tmp_path / "CITATION.cff",
            lesson,
        ],
    )

    assert colab.main(["--repository", "uni-x/privacy-course", "--student-branch", "handout"]) == 0
    fork = colab.load_address(tmp_path / "pyproject.toml")
    assert fork == colab.CourseAddress("uni-x/privacy-course", ADDRESS.branch, "handout")
    pyproject = (tmp_path / "pyproject.toml").read_text()
    original = (REPO_ROOT / "pyproject.toml").read_text()
    assert (
        pyproject.replace("uni-x/privacy-course", ADDRESS.repository).replace(
            '"handout"', f'"{ADDRESS.student_branch}"'
        )
        == original
    ), "only the address may change in pyproject.toml"
    for path in (tmp_path / "README.md", tmp_path / "INSTALLATION.md", lesson):
        assert ADDRESS.repository not in path.read_text(), path.name
    citation = (tmp_path / "CITATION.cff").read_text()
    assert citation == (REPO_ROOT / "CITATION.cff").read_text().replace(
        ADDRESS.repository, "uni-x/privacy-course"
    )
    assert 'repository-code: "https://github.com/uni-x/privacy-course"' in citation
    readme = (tmp_path / "README.md").read_text()
    assert readme.count("github/uni-x/privacy-course/blob/handout/notebooks/") == len(
        list((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    )
    assert (
        "git clone https://github.com/uni-x/privacy-course.git"
        in (tmp_path / "INSTALLATION.md").read_text()
    )
    notebook = nbformat.read(lesson, as_version=4)
    assert (
        "github/uni-x/privacy-course/blob/main/notebooks/07_pate.ipynb" in notebook.cells[0].source
    )
    assert notebook.cells[1].source == colab.install_cell(fork, "instructor", "[dp]")
    assert "--branch main https://github.com/uni-x/privacy-course /content/privacy-course" in (
        notebook.cells[1].source
    )
    assert colab.main(["--check"]) == 0
    assert (REPO_ROOT / "pyproject.toml").read_text() == original, "the course's own file changed"


def test_install_cells_keep_colabs_own_packages() -> None:
    """No install cell upgrades Colab's ipython/ipykernel: nothing but course_lib and its extras,
    none of which asks for them (CI's tools/check_wheels.py resolves them with Colab's pins)."""
    for edition in ("instructor", "student"):
        for extra in ("", "[dp]", "[fl]", "[he]"):
            cell = colab.install_cell(ADDRESS, edition, extra)
            pip_lines = [line for line in cell.splitlines() if "pip" in line]
            assert pip_lines == [f'    %pip install -q -e "{ADDRESS.clone_dir}{extra}"']
    named = {re.split(r"[\[<>=!~ ]", r, maxsplit=1)[0].lower() for r in colab_requirements()}
    assert not named & {"ipython", "ipykernel", "jupyterlab", "notebook", "jupyter-server"}
    assert {pin.split("==")[0] for pin in COLAB_PINS} == {"ipython", "ipykernel"}


@pytest.mark.parametrize(
    ("repository", "branch", "student", "message"),
    [
        ("private-ai", "main", "student", "owner/name"),
        ("a/b c", "main", "student", "owner/name"),
        ("a/b", "main", "main", "would open the solutions"),
        ("a/b", "-x", "student", "branch name"),
    ],
)
def test_bad_addresses_are_refused(
    repository: str, branch: str, student: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        colab.CourseAddress(repository, branch, student)


def test_a_lesson_without_badge_or_install_cell_is_refused() -> None:
    notebook = _lesson("07_pate.ipynb", "print('no install cell')")
    with pytest.raises(ValueError, match="second cell must be the Colab install cell"):
        colab.apply_to_notebook(notebook, "07_pate.ipynb", ADDRESS, "student")
    notebook.cells[0].source = "# 07 · X"
    with pytest.raises(ValueError, match="first cell must hold the Colab badge"):
        colab.apply_to_notebook(notebook, "07_pate.ipynb", ADDRESS, "student")


# -- the install cell, run as Colab runs it ----------------------------------------------------

#: Runs an install cell twice in a real IPython shell that believes it is in Colab; ``%pip`` is
#: recorded instead of run (it would install into this environment), ``!git clone`` really runs.
_RUN_TWICE = """
import json, sys, types
from IPython.core.interactiveshell import InteractiveShell
sys.modules["google.colab"] = types.ModuleType("google.colab")
shell = InteractiveShell.instance()
pips = []
shell.register_magic_function(lambda line: pips.append(line), "line", "pip")
source = sys.stdin.read()
ok = [shell.run_cell(source).success for _ in range(2)]
print(json.dumps({"ok": ok, "pips": pips, "exit_code": shell.user_ns.get("_exit_code"),
                  "path": sys.path}))
"""
#: The install cell as generated before it was made safe to run twice.
_OLD_INSTALL_CELL = """import sys
if "google.colab" in sys.modules:
    !git clone -q --depth 1 --branch student https://github.com/o/course /content/course
    %pip install -q -e "/content/course[fl]"
    sys.path.insert(0, "/content/course")"""


def _origin(tmp_path: Path) -> Path:
    """A repository with a ``student`` branch, standing in for GitHub."""
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "README.md").write_text("# course\n")
    for args in (
        ["init", "-q", "-b", "student"],
        ["add", "README.md"],
        ["-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "c"],
    ):
        subprocess.run(["git", *args], cwd=origin, check=True, capture_output=True)
    return origin


@pytest.mark.parametrize("generated", [True, False], ids=["generated", "old-form"])
def test_the_install_cell_is_safe_to_run_twice(tmp_path: Path, generated: bool) -> None:
    """Running the cell again (a learner's Run All after a first try) neither fails to clone
    (``fatal: destination path … already exists``) nor adds the course to sys.path twice; the
    old form of the cell, run the same way, does both — so this test can tell them apart."""
    address = colab.CourseAddress("o/course", "main", "student")
    cell = colab.install_cell(address, "student", "[fl]") if generated else _OLD_INSTALL_CELL
    origin = _origin(tmp_path)
    content = tmp_path / "content"
    cell = cell.replace("https://github.com/o/course", origin.as_uri())
    cell = cell.replace("/content/", f"{content}/")
    run = subprocess.run(
        [sys.executable, "-c", _RUN_TWICE], input=cell, capture_output=True, text=True, check=True
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["ok"] == [True, True], run.stderr
    assert (content / "course" / "README.md").read_text() == "# course\n"
    assert result["pips"] == [f'install -q -e "{content}/course[fl]"'] * 2
    clean = "fatal" not in run.stdout + run.stderr and result["exit_code"] == 0
    path_entries = result["path"].count(f"{content}/course")
    if generated:
        assert clean, run.stdout + run.stderr
        assert path_entries == 1
    else:
        assert not clean and "already exists" in run.stdout + run.stderr
        assert path_entries == 2


def test_install_extra_reads_the_cells_extra() -> None:
    for extra in ("", "dp", "fl", "he"):
        cell = colab.install_cell(ADDRESS, "student", f"[{extra}]" if extra else "")
        assert colab.install_extra(cell) == extra
    for path in REPO_ROOT.glob("notebooks/[0-9][0-9]_*.ipynb"):
        cell = nbformat.read(path, as_version=4).cells[1].source
        assert colab.install_extra(cell) in ("", "dp", "fl", "he"), path.name
    with pytest.raises(ValueError, match="one extra at most"):
        colab.install_extra('%pip install -q -e "/content/course[dp,fl]"')
    with pytest.raises(ValueError, match="expected one"):
        colab.install_extra("print('no install')")
