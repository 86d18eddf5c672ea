"""One address for every Colab badge, install cell and clone link (tools/colab.py)."""

from __future__ import annotations

import re
import shutil
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
    for name in ("README.md", "INSTALLATION.md", "pyproject.toml"):
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
        lambda: [tmp_path / "README.md", tmp_path / "INSTALLATION.md", lesson],
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
