"""Colab badges, install cells and clone links, all generated from one address.

The course's GitHub address lives in one place, the ``[tool.private-ai]`` table of
``pyproject.toml``::

    [tool.private-ai]
    repository = "OWNER/NAME"                     # on GitHub
    branch = "main"                               # the instructor edition (solutions, outputs)
    student-branch = "student"                    # the student edition (tools.student_edition)

Everything that points at the repository is written from it by this module:

- each lesson's **Colab badge** (first cell): ``https://colab.research.google.com/github/OWNER/
  REPO/blob/BRANCH/notebooks/NN_name.ipynb`` — a Colab badge opens whatever is at that path on
  GitHub, so the instructor's notebooks open ``branch`` and the student edition's open
  ``student-branch``;
- each lesson's **install cell** (second cell), which clones that same branch in Colab and installs
  ``course_lib`` with the lesson's extra (``[dp]``, ``[fl]``, ``[he]`` — kept from the cell);
  it never upgrades Colab's own ipython/ipykernel (no ``-U``, no dev tools);
- the README's course-map badges (they open the student edition: the README's first reader is a
  learner), the ``git clone`` lines of README.md and INSTALLATION.md, and CITATION.cff's
  ``repository-code``.

Usage::

    python -m tools.colab                      # rewrite README, INSTALLATION, CITATION, lessons
    python -m tools.colab notebooks/00_welcome.ipynb README.md     # only these files
    python -m tools.colab --check              # list what disagrees with pyproject; exit 1 if any
    python -m tools.colab --repository you/private-ai --branch main --student-branch student
                                               # a fork: store the new address, then rewrite all
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nbformat

from course_lib.paths import REPO_ROOT

__all__ = [
    "CourseAddress",
    "Edition",
    "apply_to_notebook",
    "apply_to_text",
    "colab_url",
    "install_cell",
    "install_extra",
    "load_address",
    "rewrite_files",
    "store_address",
]

Edition = Literal["instructor", "student"]
PYPROJECT = REPO_ROOT / "pyproject.toml"
TEXT_FILES = ("README.md", "INSTALLATION.md", "CITATION.cff")
COLAB_PREFIX = "https://colab.research.google.com/github/"
INSTALL_MARKER = '"google.colab" in sys.modules'

_GITHUB_NAME = r"[A-Za-z0-9_.-]+"
_BRANCH = r"[A-Za-z0-9_./-]+?"
#: Any Colab-from-GitHub link to a lesson, whatever address it was written for.
_COLAB_LINK = re.compile(
    rf"https://colab\.research\.google\.com/github/{_GITHUB_NAME}/{_GITHUB_NAME}/blob/{_BRANCH}/"
    r"notebooks/(?P<notebook>\d\d_[a-z0-9_]+\.ipynb)"
)
_CLONE_LINE = re.compile(
    rf"git clone (?P<options>(?:-[-\w]+(?: [\w./-]+)? )*)https://github\.com/{_GITHUB_NAME}/"
    rf"{_GITHUB_NAME}?(?:\.git)?(?P<rest>[ \n])"
)
_EXTRA = re.compile(r'%pip install -q -e "/content/[^"\[]+(?P<extra>\[[a-z,]+\])?"')
_README_ROW = re.compile(r"^\| \d\d \| \[", re.M)
#: CITATION.cff's link to the code.
_CFF_REPOSITORY = re.compile(
    rf'^repository-code: "https://github\.com/{_GITHUB_NAME}/{_GITHUB_NAME}"$', re.M
)


@dataclass(frozen=True)
class CourseAddress:
    """Where the course lives on GitHub: ``repository`` is ``owner/name``."""

    repository: str
    branch: str
    student_branch: str

    def __post_init__(self) -> None:
        if not re.fullmatch(rf"{_GITHUB_NAME}/{_GITHUB_NAME}", self.repository):
            raise ValueError(f"repository must be GitHub's 'owner/name', got {self.repository!r}")
        for field, branch in (("branch", self.branch), ("student-branch", self.student_branch)):
            if not re.fullmatch(r"[A-Za-z0-9_./-]+", branch) or branch.startswith("-"):
                raise ValueError(f"{field} must be a git branch name, got {branch!r}")
        if self.branch == self.student_branch:
            raise ValueError(
                "the student edition needs its own branch: branch and student-branch are both "
                f"{self.branch!r}, so a student's badge would open the solutions"
            )

    def edition_branch(self, edition: Edition) -> str:
        """The branch holding ``edition``'s notebooks."""
        return self.student_branch if edition == "student" else self.branch

    @property
    def clone_dir(self) -> str:
        """Where install cells clone the course in Colab."""
        return f"/content/{self.repository.split('/')[1]}"


def load_address(pyproject: Path | None = None) -> CourseAddress:
    """Read ``[tool.private-ai]`` from ``pyproject`` (default: the course's); ValueError if it is
    missing or malformed."""
    pyproject = pyproject or PYPROJECT
    table = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("private-ai")
    if not isinstance(table, dict):
        raise ValueError(f"{pyproject} has no [tool.private-ai] table with the course's address")
    try:
        return CourseAddress(table["repository"], table["branch"], table["student-branch"])
    except KeyError as missing:
        raise ValueError(f"[tool.private-ai] in {pyproject} lacks {missing.args[0]!r}") from None


def store_address(address: CourseAddress, pyproject: Path | None = None) -> None:
    """Write ``address`` into the ``[tool.private-ai]`` table of ``pyproject`` (default: the
    course's; the table must exist), changing nothing else in the file."""
    pyproject = pyproject or PYPROJECT
    text = pyproject.read_text(encoding="utf-8")
    load_address(pyproject)  # refuses a file without the table
    values = {
        "repository": address.repository,
        "branch": address.branch,
        "student-branch": address.student_branch,
    }
    table = re.search(r"^\[tool\.private-ai\]\n(?:(?!\[).*\n?)*", text, re.M)
    assert table is not None  # load_address found it
    body = table.group(0)
    for key, value in values.items():
        body = re.sub(rf'^({re.escape(key)}\s*=\s*)"[^"]*"', rf'\g<1>"{value}"', body, flags=re.M)
    pyproject.write_text(text[: table.start()] + body + text[table.end() :], encoding="utf-8")
    if load_address(pyproject) != address:
        raise ValueError(f"could not store {address} in {pyproject}")


def colab_url(address: CourseAddress, notebook: str, edition: Edition) -> str:
    """The "Open in Colab" link of lesson file ``notebook`` (e.g. ``"00_welcome.ipynb"``)."""
    branch = address.edition_branch(edition)
    return f"{COLAB_PREFIX}{address.repository}/blob/{branch}/notebooks/{notebook}"


def install_cell(address: CourseAddress, edition: Edition, extra: str = "") -> str:
    """The source of a lesson's install cell; ``extra`` is ``""`` or e.g. ``"[fl]"``.

    In Colab it clones ``edition``'s branch (unless an earlier run of the cell did) and installs
    ``course_lib`` (editable) with the lesson's extra; running it again changes nothing (no
    ``fatal: destination path … already exists``, no second ``sys.path`` entry). It only adds
    packages: Colab's torch, ipython and ipykernel stay (the course's
    requirements admit them; ``tools/check_wheels.py`` proves it in CI).
    """
    if extra and not re.fullmatch(r"\[[a-z,]+\]", extra):
        raise ValueError(f"extra must look like '[fl]', got {extra!r}")
    branch = address.edition_branch(edition)
    clone = address.clone_dir
    return (
        "# Colab only: fetch the course and install course_lib (does nothing on your own "
        "machine; safe to run again).\nimport os\nimport sys\n"
        f"if {INSTALL_MARKER}:\n"
        f'    if not os.path.isdir("{clone}/.git"):\n'
        f"        !git clone -q --depth 1 --branch {branch} "
        f"https://github.com/{address.repository} {clone}\n"
        f'    %pip install -q -e "{clone}{extra}"\n'
        f'    if "{clone}" not in sys.path:\n'
        f'        sys.path.insert(0, "{clone}")'
    )


def install_extra(source: str) -> str:
    """The extra an install cell's ``source`` installs: ``""`` (the core only), ``"dp"``,
    ``"fl"`` or ``"he"``; ValueError if ``source`` installs no ``course_lib`` or several extras."""
    found = _EXTRA.findall(source)
    if len(found) != 1:
        raise ValueError(f"expected one '%pip install -q -e \"/content/...\"' line, got {found}")
    extra = found[0].strip("[]")
    if "," in extra:
        raise ValueError(f"an install cell installs one extra at most, got [{extra}]")
    return extra


def apply_to_notebook(
    notebook: nbformat.NotebookNode, name: str, address: CourseAddress, edition: Edition
) -> nbformat.NotebookNode:
    """Point lesson ``name``'s badge (first cell) and install cell (second) at ``address``, in
    place; returns ``notebook``. ValueError if the lesson lacks either cell."""
    if len(notebook.cells) < 2:
        raise ValueError(f"{name}: a lesson starts with its title cell and its install cell")
    title, install = notebook.cells[0], notebook.cells[1]
    badge = f"({COLAB_PREFIX}"
    if title.cell_type != "markdown" or badge not in title.source:
        raise ValueError(f"{name}: the first cell must hold the Colab badge")
    if install.cell_type != "code" or INSTALL_MARKER not in install.source:
        raise ValueError(f"{name}: the second cell must be the Colab install cell")
    url = colab_url(address, name, edition)
    title.source = _COLAB_LINK.sub(url, title.source)
    extra = _EXTRA.search(install.source)
    install.source = install_cell(address, edition, (extra and extra["extra"]) or "")
    return notebook


def apply_to_text(text: str, address: CourseAddress) -> str:
    """Rewrite a markdown document's lesson badges (student edition) and ``git clone`` lines, and
    CITATION.cff's ``repository-code``."""
    text = _COLAB_LINK.sub(lambda m: colab_url(address, m["notebook"], "student"), text)
    text = _CFF_REPOSITORY.sub(f'repository-code: "https://github.com/{address.repository}"', text)
    return _CLONE_LINE.sub(
        lambda m: f"git clone {m['options']}https://github.com/{address.repository}.git{m['rest']}",
        text,
    )


def _edition_of(path: Path) -> Edition:
    """Lessons under the repository's ``notebooks/`` are the instructor's; others are students'."""
    return "instructor" if path.resolve().parent == REPO_ROOT / "notebooks" else "student"


def rewrite_files(
    paths: Iterable[Path], address: CourseAddress, *, check_only: bool = False
) -> list[Path]:
    """Bring ``paths`` (lessons ``.ipynb`` or markdown files) in line with ``address``.

    Returns the files that differed (and, unless ``check_only``, were rewritten).
    """
    differing = []
    for path in map(Path, paths):
        if path.suffix == ".ipynb":
            old = nbformat.read(path, as_version=4)
            new = apply_to_notebook(nbformat.from_dict(old), path.name, address, _edition_of(path))
            changed = [c.source for c in new.cells[:2]] != [c.source for c in old.cells[:2]]
            if changed and not check_only:
                nbformat.write(new, path)
        else:
            text = path.read_text(encoding="utf-8")
            new_text = apply_to_text(text, address)
            changed = new_text != text
            if changed and not check_only:
                path.write_text(new_text, encoding="utf-8")
        if changed:
            differing.append(path)
    return differing


def default_files() -> list[Path]:
    """README.md, INSTALLATION.md, CITATION.cff and every lesson."""
    lessons = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    return [REPO_ROOT / name for name in TEXT_FILES] + lessons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "files", nargs="*", type=Path, help="default: README, INSTALLATION, CITATION, lessons"
    )
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if any differ")
    parser.add_argument("--repository", help="a fork's GitHub owner/name (stored in pyproject)")
    parser.add_argument("--branch", help="the fork's instructor branch (stored in pyproject)")
    parser.add_argument("--student-branch", help="the fork's student branch (stored in pyproject)")
    args = parser.parse_args(argv)
    address = load_address()
    if args.repository or args.branch or args.student_branch:
        if args.check:
            parser.error("--check takes the address from pyproject.toml; drop --repository etc.")
        address = CourseAddress(
            args.repository or address.repository,
            args.branch or address.branch,
            args.student_branch or address.student_branch,
        )
        store_address(address)
    files = args.files or default_files()
    differing = rewrite_files(files, address, check_only=args.check)
    where = f"{address.repository} ({address.branch} / students: {address.student_branch})"
    names = ", ".join(p.name for p in differing)
    if args.check:
        print(f"{len(differing)} of {len(files)} files disagree with {where}: {names or '-'}")
        return 1 if differing else 0
    print(f"Rewrote {len(differing)} of {len(files)} files for {where}: {names or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
