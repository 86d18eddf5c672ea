"""The course's catalogue: the README's *Course map* table, checked against the lesson notebooks.

The README is the one list of lessons. The site takes each lesson's part, title, summary, run time
and Colab address from its course map (:func:`parse_course_map`) and the learning paths from its
``Paths:`` line (:func:`parse_paths`); the build refuses to run when the table and the notebooks
disagree (:func:`load_catalogue`), so the README and the site can never tell a learner different
things.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = [
    "LearningPath",
    "Lesson",
    "load_catalogue",
    "notebook_title",
    "parse_course_map",
    "parse_paths",
    "readme_intro",
]

LESSON_GLOB = "[0-9][0-9]_*.ipynb"
MAP_HEADING = "## Course map"
MAP_COLUMNS = ["#", "Lesson", "What you learn", "Run time", "Colab"]
PATHS_PREFIX = "Paths:"

_PART = re.compile(r"\*\*(?P<part>[^*]+)\*\*")
_TITLE_LINK = re.compile(r"\[(?P<title>[^\]]+)\]\(notebooks/(?P<notebook>\d\d_[a-z0-9_]+\.ipynb)\)")
_COLAB_LINK = re.compile(
    r"\[!\[[^\]]*\]\([^)\s]+\)\]\((?P<url>https://colab\.research\.google\.com/[^)\s]+)\)"
)
_PATH = re.compile(
    r"\*(?P<name>[^*]+)\*\s+(?P<ranges>\d\d(?:\s*[–-]\s*\d\d)?(?:,\s*\d\d(?:\s*[–-]\s*\d\d)?)*)"
)


@dataclass(frozen=True)
class Lesson:
    """One row of the README's course map."""

    number: str  #: two digits, "07"
    title: str  #: as in the notebook's first line "# 07 · Title"
    notebook: str  #: file name in notebooks/, "07_pate.ipynb"
    summary: str  #: "What you learn", in markdown
    run_time: str  #: e.g. "~20 s"
    colab_url: str  #: where the row's "Open in Colab" badge points (the instructor's notebook)
    part: str  #: e.g. "Part II · Differential privacy"

    @property
    def stem(self) -> str:
        """The notebook's name without ``.ipynb``: the page's name on the site."""
        return self.notebook.removesuffix(".ipynb")


@dataclass(frozen=True)
class LearningPath:
    """One of the README's learning paths: a name and the lesson numbers it takes, in order."""

    name: str  #: e.g. "DP only"
    numbers: tuple[str, ...]  #: e.g. ("00", "01", ..., "08")
    note: str  #: what follows the ranges in the README, e.g. "(the capstone needs Parts II–IV)"


def _table_rows(readme: str) -> list[list[str]]:
    """The cells of the first markdown table under the README's course map heading."""
    lines = readme.splitlines()
    if MAP_HEADING not in lines:
        raise ValueError(f"the README has no '{MAP_HEADING}' section")
    rows: list[list[str]] = []
    for line in lines[lines.index(MAP_HEADING) + 1 :]:
        line = line.strip()
        if line.startswith("|"):
            if not line.endswith("|") or len(line) < 2:
                raise ValueError(f"course map row does not end with '|': {line!r}")
            rows.append([cell.strip() for cell in line[1:-1].split("|")])
        elif rows or line.startswith("## "):
            break
    if not rows:
        raise ValueError(f"no table under '{MAP_HEADING}'")
    return rows


def _lesson_from_row(cells: list[str], part: str | None) -> Lesson:
    number, link, summary, run_time, colab = cells
    title_link, colab_link = _TITLE_LINK.fullmatch(link), _COLAB_LINK.fullmatch(colab)
    row = " | ".join(cells)
    if part is None:
        raise ValueError(f"course map row before any '**Part …**' row: {row!r}")
    if not re.fullmatch(r"\d\d", number) or title_link is None or colab_link is None:
        raise ValueError(
            "a course map row needs 'NN | [Title](notebooks/NN_topic.ipynb) | summary | run time "
            f"| [![Open in Colab](badge.svg)](https://colab.research.google.com/...)', got {row!r}"
        )
    if title_link["notebook"][:2] != number:
        raise ValueError(f"row {number} links to lesson {title_link['notebook']}")
    if not summary or not run_time:
        raise ValueError(f"row {number} needs a summary and a run time")
    return Lesson(
        number=number,
        title=title_link["title"],
        notebook=title_link["notebook"],
        summary=summary,
        run_time=run_time,
        colab_url=colab_link["url"],
        part=part,
    )


def parse_course_map(readme: str) -> list[Lesson]:
    """The lessons listed in the README's course map table, in table order.

    The table has the columns of :data:`MAP_COLUMNS`; a row ``| | **Part II · …** | | | |`` starts
    a part, every other row is one lesson. Raises ValueError, naming the row, on anything else.
    """
    header, _separator, *rows = _table_rows(readme)
    if header != MAP_COLUMNS:
        raise ValueError(f"course map columns are {header}, expected {MAP_COLUMNS}")
    lessons: list[Lesson] = []
    part: str | None = None
    for cells in rows:
        if len(cells) != len(MAP_COLUMNS):
            raise ValueError(f"course map row has {len(cells)} cells, expected 5: {cells}")
        heading = _PART.fullmatch(cells[1])
        if not cells[0] and heading and not any(cells[2:]):
            part = heading["part"]
        else:
            lessons.append(_lesson_from_row(cells, part))
    return lessons


def _expand(ranges: str) -> tuple[str, ...]:
    """``"00–03, 09–14"`` → ``("00", "01", "02", "03", "09", ..., "14")``."""
    numbers: list[str] = []
    for piece in ranges.split(","):
        start, _, end = piece.strip().replace("-", "–").partition("–")
        first, last = int(start), int(end or start)
        if last < first:
            raise ValueError(f"the README's path range {piece.strip()!r} runs backwards")
        numbers += [f"{n:02d}" for n in range(first, last + 1)]
    return tuple(numbers)


def parse_paths(readme: str) -> list[LearningPath]:
    """The learning paths of the README's paragraph that starts with ``Paths:``.

    The sentence reads ``Paths: *DP only* 00–08 · *FL only* 00–03, 09–14 · … .`` (it may wrap; it
    ends at the first line that ends with a full stop): each path is an italic name, lesson numbers
    and ranges, then optional words, e.g. a remark in brackets. Raises ValueError when there is no
    such sentence or a piece of it is not a path.
    """
    lines = readme.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(PATHS_PREFIX)), None)
    if start is None:
        raise ValueError(f"the README has no paragraph starting with '{PATHS_PREFIX}'")
    paragraph = []
    for line in lines[start:]:  # the sentence ends with the first line that ends with "."
        paragraph.append(line.strip())
        if not line.strip() or line.rstrip().endswith("."):
            break
    text = " ".join(paragraph).removeprefix(PATHS_PREFIX).strip().removesuffix(".")
    paths = []
    for piece in text.split("·"):
        match = _PATH.match(piece.strip())
        if match is None:
            raise ValueError(f"the README's path {piece.strip()!r} is not '*name* NN–NN, NN–NN'")
        note = piece.strip()[match.end() :].strip()
        paths.append(LearningPath(match["name"], _expand(match["ranges"]), note))
    return paths


def notebook_title(notebook: nbformat.NotebookNode, filename: str) -> str:
    """The title in a lesson's first line, ``# NN · Title`` (NN: the number in ``filename``)."""
    first = notebook.cells[0] if notebook.cells else None
    line = first.source.partition("\n")[0] if first and first.cell_type == "markdown" else ""
    prefix = f"# {filename[:2]} · "
    if not line.startswith(prefix) or not line[len(prefix) :].strip():
        raise ValueError(
            f"{filename}: the first cell must start with '{prefix}Title', not {line!r}"
        )
    return line[len(prefix) :].strip()


def load_catalogue(readme: str, notebooks_dir: Path) -> list[Lesson]:
    """The README's course map, checked against the lesson notebooks in ``notebooks_dir``.

    Raises ValueError unless the map lists every lesson notebook, exactly once, in order, with the
    title of the notebook's first line — so the README and the site can never disagree.
    """
    lessons = parse_course_map(readme)
    listed = [lesson.notebook for lesson in lessons]
    found = sorted(path.name for path in Path(notebooks_dir).glob(LESSON_GLOB))
    unlisted, missing = sorted(set(found) - set(listed)), sorted(set(listed) - set(found))
    if unlisted or missing:
        raise ValueError(
            f"the README course map and notebooks/ disagree: not in the map {unlisted}, "
            f"no such notebook {missing}"
        )
    if listed != found:
        raise ValueError(f"the course map must list each lesson once, in order, not {listed}")
    for lesson in lessons:
        title = notebook_title(
            nbformat.read(notebooks_dir / lesson.notebook, as_version=4), lesson.notebook
        )
        if title != lesson.title:
            raise ValueError(
                f"lesson {lesson.number} is {title!r} in its notebook but {lesson.title!r} "
                "in the README course map"
            )
    return lessons


def readme_intro(readme: str) -> tuple[str, str]:
    """The README's title (its first line, ``# Title``) and first paragraph (markdown)."""
    lines = readme.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError("the README must start with '# Course title'")
    paragraph: list[str] = []
    for line in lines[1:]:
        if line.strip():
            paragraph.append(line.strip())
        elif paragraph:
            break
    return lines[0][2:].strip(), " ".join(paragraph)
