"""The site's home page (MyST markdown), written from the README so the two never disagree.

It tells a learner what the course is (the README's first paragraph), which path to take (the
README's ``Paths:`` sentence), how to start (Colab or locally), and the course map by part with
each lesson's summary and run time (the README's course map); the hidden table of contents it ends
with gives the sidebar its parts.
"""

from __future__ import annotations

from itertools import groupby

from tools.site.catalogue import LearningPath, Lesson
from tools.site.editions import Edition

__all__ = ["home_page"]

INSTALL_PAGE = "install"  #: the site's copy of INSTALLATION.md


def _cell(markdown: str) -> str:
    """``markdown`` made safe for one cell of a markdown table."""
    return markdown.replace("|", "\\|")


def _about(edition: Edition) -> str:
    if edition.solutions:
        return (
            ":::{note}\nThis is the **instructor edition**: every exercise shows its solution "
            "and every cell its stored output. Learners get the student edition (`make site`).\n:::"
        )
    return (
        ":::{tip}\nThis is the **student edition**: exercises are left for you to solve, and "
        "the outputs that would give an answer away are left empty. Every page shows the output "
        "of a full run otherwise — nothing here needs a kernel.\n:::"
    )


def _paths_table(paths: list[LearningPath], lessons: dict[str, Lesson]) -> str:
    rows = ["| Path | Lessons |", "|---|---|"]
    for path in paths:
        unknown = [number for number in path.numbers if number not in lessons]
        if unknown:
            raise ValueError(f"the README's path {path.name!r} names no lesson {unknown}")
        links = " · ".join(
            f"[{number}](notebooks/{lessons[number].notebook})" for number in path.numbers
        )
        name = path.name[:1].upper() + path.name[1:]
        rows.append(f"| **{_cell(name)}** | {links} {_cell(path.note)} |")
    return "\n".join(rows)


def _course_map(lessons: list[Lesson]) -> str:
    sections = []
    for part, members in groupby(lessons, key=lambda lesson: lesson.part):
        rows = [
            f"### {part}",
            "",
            "| # | Lesson | What you learn | Run time |",
            "|---|---|---|---|",
        ]
        rows += [
            f"| {lesson.number} | [{_cell(lesson.title)}](notebooks/{lesson.notebook}) "
            f"| {_cell(lesson.summary)} | {_cell(lesson.run_time)} |"
            for lesson in members
        ]
        sections.append("\n".join(rows))
    return "\n\n".join(sections)


def _toctrees(lessons: list[Lesson]) -> str:
    trees = [f"```{{toctree}}\n:hidden:\n:caption: Start\n\n{INSTALL_PAGE}\n```"]
    for part, members in groupby(lessons, key=lambda lesson: lesson.part):
        entries = "\n".join(f"notebooks/{lesson.stem}" for lesson in members)
        trees.append(f"```{{toctree}}\n:hidden:\n:caption: {part}\n\n{entries}\n```")
    return "\n\n".join(trees)


def home_page(
    title: str,
    intro: str,
    lessons: list[Lesson],
    paths: list[LearningPath],
    edition: Edition,
    clone_url: str,
) -> str:
    """The home page's MyST markdown. Raises ValueError if a path names a lesson not in the map."""
    first = lessons[0]
    return f"""# {title}

{intro}

{_about(edition)}

## Choose a path

Each path begins with the foundations (tensors, training a network, the self-checking exercises);
then take the privacy technique you need, or the whole course.

{_paths_table(paths, {lesson.number: lesson for lesson in lessons})}

## Start

**In your browser.** Open a lesson and choose *Colab* under the rocket button at the top of its
page: Colab opens this edition's copy of the notebook, and its first cell installs the course.

**On your computer** (Python 3.11–3.13; every lesson runs on a laptop CPU, offline too):

```bash
git clone {clone_url}.git
cd {clone_url.rsplit("/", 1)[-1]}
make lab     # creates .venv, installs the course, opens JupyterLab on notebooks/
```

Conda, offline use and troubleshooting: [Installing the course]({INSTALL_PAGE}.md). Then begin with
[{first.number} · {first.title}](notebooks/{first.notebook}).

## Course map

Run times are for running the whole lesson, measured on 2 CPU cores with one torch thread.

{_course_map(lessons)}

{_toctrees(lessons)}
"""
