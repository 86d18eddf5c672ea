"""Build one edition of the course website: stage its sources, run Sphinx, check the result.

Sources are staged into ``<work>/source/`` (default work folder: ``build/site-sources/<edition>/``):

    index.md                      the home page (tools/site/home.py), from the README
    install.md                    INSTALLATION.md
    notebooks/NN_topic.ipynb      each lesson as its page shows it (tools/site/pages.py)

A staged file is rewritten only when its content changes, so a rebuild renders only the changed
lessons. Sphinx (configured by tools/site/conf.py) then writes the HTML site to
``build/site/<edition>/`` (``index.html`` is the home page). The build fails — after writing, so
the pages can be inspected — when Sphinx warns (a broken cross-reference, a bad directive), a
relative link leads nowhere, or a page would load anything from the network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from sphinx.cmd.build import build_main

from course_lib.paths import REPO_ROOT
from tools import colab
from tools.site.catalogue import Lesson, load_catalogue, parse_paths, readme_intro
from tools.site.checks import broken_links, network_loads
from tools.site.editions import EDITIONS, Edition
from tools.site.home import INSTALL_PAGE, home_page
from tools.site.pages import (
    figure_alt_texts,
    local_colab_badges,
    static_progress_bars,
    student_page,
)

__all__ = ["SiteBuild", "build_site", "stage_sources"]

CONF_DIR = Path(__file__).parent


@dataclass(frozen=True)
class SiteBuild:
    """What :func:`build_site` made."""

    edition: Edition
    html_dir: Path  #: the site; open ``html_dir / "index.html"``
    lessons: list[Lesson]
    seconds: float  #: wall time of staging + Sphinx + checks


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _lesson_page(path: Path, edition: Edition, address: colab.CourseAddress) -> NotebookNode:
    """Lesson notebook ``path`` as ``edition``'s page shows it."""
    notebook = nbformat.read(path, as_version=4)
    if edition.solutions:
        notebook = colab.apply_to_notebook(notebook, path.name, address, edition.name)
    else:
        notebook = student_page(notebook, path.name)
    return figure_alt_texts(local_colab_badges(static_progress_bars(notebook)))


def stage_sources(
    edition: Edition,
    source_dir: Path,
    *,
    readme: Path,
    notebooks_dir: Path,
    install: Path,
) -> list[Lesson]:
    """Write the Sphinx sources of ``edition`` into ``source_dir`` and return the lessons.

    Raises ValueError when the README's course map and the notebooks disagree (see
    :func:`tools.site.catalogue.load_catalogue`), and ``tools.student_edition``'s
    SolutionMarkerError on a solution block the student edition cannot stub.
    """
    readme_text = readme.read_text(encoding="utf-8")
    lessons = load_catalogue(readme_text, notebooks_dir)
    address = colab.load_address()
    title, intro = readme_intro(readme_text)
    clone_url = f"https://github.com/{address.repository}"
    home = home_page(title, intro, lessons, parse_paths(readme_text), edition, clone_url)
    wanted = {source_dir / "index.md": home}
    wanted[source_dir / f"{INSTALL_PAGE}.md"] = install.read_text(encoding="utf-8")
    for lesson in lessons:
        page = _lesson_page(notebooks_dir / lesson.notebook, edition, address)
        wanted[source_dir / "notebooks" / lesson.notebook] = nbformat.writes(page) + "\n"
    if source_dir.is_dir():  # e.g. the page of a renamed lesson
        for stale in [p for p in source_dir.rglob("*") if p.is_file() and p not in wanted]:
            stale.unlink()
    for path, text in wanted.items():
        _write_if_changed(path, text)
    return lessons


def build_site(
    edition: str = "student",
    out_dir: Path | None = None,
    *,
    work_dir: Path | None = None,
    readme: Path | None = None,
    notebooks_dir: Path | None = None,
    install: Path | None = None,
) -> SiteBuild:
    """Build ``edition`` ("student" or "instructor") of the site into ``out_dir`` (default
    ``build/site/<edition>/``). The other paths default to the course's own files.

    Raises ValueError for an unknown edition, a README/notebook mismatch, Sphinx warnings, broken
    links, or a page that would load from the network (the last three after writing the site).
    """
    if edition not in EDITIONS:
        raise ValueError(f"edition must be one of {sorted(EDITIONS)}, not {edition!r}")
    chosen = EDITIONS[edition]
    start = time.perf_counter()
    out_dir = Path(out_dir or REPO_ROOT / "build" / "site" / edition)
    work_dir = Path(work_dir or REPO_ROOT / "build" / "site-sources" / edition)
    lessons = stage_sources(
        chosen,
        work_dir / "source",
        readme=Path(readme or REPO_ROOT / "README.md"),
        notebooks_dir=Path(notebooks_dir or REPO_ROOT / "notebooks"),
        install=Path(install or REPO_ROOT / "INSTALLATION.md"),
    )
    warnings = work_dir / "sphinx-warnings.txt"
    status = build_main(  # sphinx-build, run in this process
        [
            "--builder=html",
            f"--conf-dir={CONF_DIR}",
            f"--doctree-dir={work_dir / 'doctrees'}",
            f"--tag={edition}",
            f"--warning-file={warnings}",
            "--quiet",
            "--no-color",
            str(work_dir / "source"),
            str(out_dir),
        ]
    )
    problems = [line for line in warnings.read_text(encoding="utf-8").splitlines() if line.strip()]
    if status and not problems:
        problems.append(f"sphinx-build exited with status {status}")
    stems = {lesson.stem for lesson in lessons}
    for stale in (out_dir / "notebooks").glob("*.html"):  # the page of a lesson that is gone
        if stale.stem not in stems:
            stale.unlink()
    problems += [f"broken link: {line}" for line in broken_links(out_dir)]
    problems += [f"loads from the network: {line}" for line in network_loads(out_dir)]
    if problems:
        raise ValueError(f"the {edition} site has problems:\n  " + "\n  ".join(problems))
    return SiteBuild(chosen, out_dir, lessons, time.perf_counter() - start)
