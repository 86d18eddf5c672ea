"""Build the course website: ``python -m course_lib.site [--out DIR]`` (or ``make site``).

Every lesson notebook becomes a static HTML page that shows its *stored* outputs — nothing is
executed, so the site shows exactly what ``make execute`` committed. The site (``build/site/`` by
default) looks like this::

    index.html                  course title, intro and the course map, grouped by part
    lessons/00_welcome.html     one page per lesson, each linking to the index and to the
    lessons/01_tensors.html     previous and next lessons
    ...

**One catalogue.** The README's *Course map* table is the only list of lessons: the index takes
each lesson's part, summary and run time from it (see :func:`parse_course_map`), and the build
refuses to run when the table and the notebooks disagree — a lesson missing from the map, a row
whose notebook does not exist, or a title that differs from the notebook's first line
``# NN · Title`` (see :func:`load_catalogue`).

**Links that work.** Links between lessons are rewritten for the site: ``01_tensors.ipynb`` and the
README's ``notebooks/01_tensors.ipynb`` become ``01_tensors.html`` (:func:`rewrite_lesson_links`).
After writing, every relative ``href``/``src`` in every page must name a file of the site, and every
``#anchor`` an ``id`` in its page (see :func:`broken_links`); otherwise the build fails, so a lesson
that links to a file the site does not have is caught instead of shipped as a dead link.
"""

from __future__ import annotations

import argparse
import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from string import Template
from urllib.parse import unquote, urlsplit

import nbformat
from nbconvert import HTMLExporter

from course_lib.paths import REPO_ROOT

__all__ = [
    "Lesson",
    "broken_links",
    "build_site",
    "inline_markdown",
    "load_catalogue",
    "notebook_title",
    "parse_course_map",
    "rewrite_lesson_links",
]

LESSON_GLOB = "[0-9][0-9]_*.ipynb"
MAP_HEADING = "## Course map"
MAP_COLUMNS = ["#", "Lesson", "What you learn", "Run time", "Colab"]

_PART = re.compile(r"\*\*(?P<part>[^*]+)\*\*")
_TITLE_LINK = re.compile(r"\[(?P<title>[^\]]+)\]\(notebooks/(?P<notebook>\d\d_[a-z0-9_]+\.ipynb)\)")
_COLAB_LINK = re.compile(
    r"\[!\[[^\]]*\]\([^)\s]+\)\]\((?P<url>https://colab\.research\.google\.com/[^)\s]+)\)"
)
# A relative link to a lesson notebook, as a lesson writes it (``01_tensors.ipynb``) or as the
# README does (``notebooks/01_tensors.ipynb``); absolute URLs (Colab, GitHub) never match.
_LESSON_HREF = re.compile(
    r'href="(?:\./|\.\./notebooks/|notebooks/)?(?P<stem>\d\d_[a-z0-9_]+)\.ipynb(?P<anchor>#[^"]*)?"'
)


@dataclass(frozen=True)
class Lesson:
    """One row of the README's course map."""

    number: str  #: two digits, "07"
    title: str  #: as in the notebook's first line "# 07 · Title"
    notebook: str  #: file name in notebooks/, "07_pate.ipynb"
    summary: str  #: "What you learn", in markdown
    run_time: str  #: e.g. "~20 s"
    colab_url: str  #: where the row's "Open in Colab" badge points
    part: str  #: e.g. "Part II · Differential privacy"

    @property
    def page(self) -> str:
        """The lesson's file name in the site's ``lessons/`` folder."""
        return self.notebook.removesuffix(".ipynb") + ".html"


# -- the catalogue: README course map, checked against the notebooks -----------------------------


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


# -- pages ---------------------------------------------------------------------------------------


def inline_markdown(text: str) -> str:
    """HTML for the little markdown the README's intro and table use: `code`, **bold**, *italic*."""
    pieces = re.split(r"(`[^`]+`)", text)  # odd pieces are code spans: leave their insides alone
    out = []
    for i, piece in enumerate(pieces):
        if i % 2:
            out.append(f"<code>{html.escape(piece[1:-1])}</code>")
        else:
            piece = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(piece))
            out.append(re.sub(r"\*(.+?)\*", r"<em>\1</em>", piece))
    return "".join(out)


def rewrite_lesson_links(page: str) -> str:
    """``page`` with every relative link to a lesson notebook pointing at its site page instead.

    ``href="01_tensors.ipynb#Exercises"`` and ``href="notebooks/01_tensors.ipynb"`` both become
    ``href="01_tensors.html…"`` (lesson pages sit side by side); absolute URLs are left alone.
    """
    return _LESSON_HREF.sub(lambda m: f'href="{m["stem"]}.html{m["anchor"] or ""}"', page)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 62rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.5; color: #1f2328; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .35rem .6rem;
         border-bottom: 1px solid #d0d7de; }
tr.part th { padding-top: 1.2rem; font-size: 1.05rem; border-bottom: 2px solid #1f2328; }
td.time { white-space: nowrap; }
code { background: #f3f4f6; padding: 0 .2rem; border-radius: 3px; }
"""

_INDEX = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$style</style>
</head>
<body>
<h1>$title</h1>
<p>$intro</p>
<h2>Course map</h2>
<table>
<thead><tr><th>#</th><th>Lesson</th><th>What you learn</th><th>Run time</th><th></th></tr></thead>
<tbody>
$rows
</tbody>
</table>
</body>
</html>
""")

_NAV_STYLE = (
    "display:flex;justify-content:space-between;gap:1rem;max-width:62rem;margin:1rem auto;"
    "padding:.5rem 1rem;font-family:system-ui,sans-serif;border-bottom:1px solid #d0d7de"
)


def render_index(title: str, intro: str, lessons: list[Lesson]) -> str:
    """The site's front page: ``title``, ``intro`` (markdown) and the course map by part."""
    rows: list[str] = []
    for i, lesson in enumerate(lessons):
        if i == 0 or lesson.part != lessons[i - 1].part:
            rows.append(f'<tr class="part"><th colspan="5">{html.escape(lesson.part)}</th></tr>')
        rows.append(
            f"<tr><td>{lesson.number}</td>"
            f'<td><a href="lessons/{lesson.page}">{html.escape(lesson.title)}</a></td>'
            f"<td>{inline_markdown(lesson.summary)}</td>"
            f'<td class="time">{html.escape(lesson.run_time)}</td>'
            f'<td><a href="{html.escape(lesson.colab_url)}">Open in Colab</a></td></tr>'
        )
    return _INDEX.substitute(
        title=html.escape(title), intro=inline_markdown(intro), rows="\n".join(rows), style=_STYLE
    )


def lesson_nav(lessons: list[Lesson], index: int) -> str:
    """The bar at the top and bottom of lesson ``index``: previous · course index · next."""

    def link(lesson: Lesson, rel: str, label: str) -> str:
        return f'<a href="{lesson.page}" rel="{rel}">{html.escape(label)}</a>'

    before = lessons[index - 1] if index > 0 else None
    after = lessons[index + 1] if index + 1 < len(lessons) else None
    return (
        f'<nav class="course-nav" style="{_NAV_STYLE}">'
        f"<span>{link(before, 'prev', f'← {before.number} · {before.title}') if before else ''}"
        '</span><a href="../index.html">Course index</a>'
        f"<span>{link(after, 'next', f'{after.number} · {after.title} →') if after else ''}</span>"
        "</nav>"
    )


def lesson_page(
    notebook: nbformat.NotebookNode, lesson: Lesson, nav: str, exporter: HTMLExporter
) -> str:
    """One lesson as a standalone HTML page (stored outputs, not re-run), with ``nav`` added at
    the top and the bottom and its links to other lessons rewritten for the site."""
    resources = {"metadata": {"name": f"{lesson.number} · {lesson.title}"}}
    page, _ = exporter.from_notebook_node(notebook, resources=resources)
    page, found = re.subn(r"<body[^>]*>", lambda m: m[0] + nav, rewrite_lesson_links(page), count=1)
    head, closing, tail = page.rpartition("</body>")
    if not found or not closing:
        raise ValueError(f"{lesson.notebook}: nbconvert's page has no <body> element")
    return head + nav + closing + tail


# -- checking the links -------------------------------------------------------------------------


class _PageLinks(HTMLParser):
    """Collects a page's ``href``/``src`` values and its ``id``s (anchor targets)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is not None and name in ("href", "src"):
                self.links.append(value)
            elif value is not None and (name == "id" or (tag == "a" and name == "name")):
                self.ids.add(value)


def _read_page(path: Path) -> _PageLinks:
    parser = _PageLinks()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def _has_anchor(page: _PageLinks, fragment: str) -> bool:
    """Whether ``#fragment`` lands somewhere in ``page``: like a browser, try the id as written
    (nbconvert percent-encodes its heading ids: ``id="Deriving-%CE%B5"``), then decoded."""
    return fragment in page.ids or unquote(fragment) in page.ids


def broken_links(site_dir: Path) -> list[str]:
    """Every relative link in the site's pages that leads nowhere, as ``"page: 'link' …"`` lines.

    External links (``http(s):``, ``mailto:``, ``data:`` …) are not followed. A relative link must
    name a file inside ``site_dir``; its ``#anchor``, if any, must be an ``id`` of the HTML page it
    names (``#anchor`` alone: of the page itself). An empty list means the site is sound.
    """
    root = Path(site_dir).resolve()
    pages = {path: _read_page(path) for path in sorted(root.rglob("*.html"))}
    problems: list[str] = []
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            where = f"{page.relative_to(root).as_posix()}: {link!r}"
            if not target.is_relative_to(root) or not target.is_file():
                problems.append(f"{where} names no file of the site")
            elif (
                parts.fragment
                and target in pages
                and not _has_anchor(pages[target], parts.fragment)
            ):
                problems.append(f"{where}: {target.name} has no id {parts.fragment!r}")
    return problems


# -- the build ----------------------------------------------------------------------------------


def build_site(
    out_dir: Path | None = None,
    *,
    readme: Path | None = None,
    notebooks_dir: Path | None = None,
) -> list[Path]:
    """Write the site into ``out_dir`` (default ``build/site/``) and return the pages written,
    ``index.html`` first. ``readme`` and ``notebooks_dir`` default to the course's own.

    Raises ValueError when the README's course map and the notebooks disagree, or — after writing,
    so the pages can be inspected — when a page has a broken link.
    """
    readme_text = Path(readme or REPO_ROOT / "README.md").read_text(encoding="utf-8")
    notebooks_dir = Path(notebooks_dir or REPO_ROOT / "notebooks")
    out_dir = Path(out_dir or REPO_ROOT / "build" / "site")
    lessons = load_catalogue(readme_text, notebooks_dir)
    (out_dir / "lessons").mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / "lessons").glob("*.html"):  # e.g. the page of a renamed lesson
        stale.unlink()
    index = out_dir / "index.html"
    index.write_text(render_index(*readme_intro(readme_text), lessons), encoding="utf-8")
    written, exporter = [index], HTMLExporter()
    for i, lesson in enumerate(lessons):
        notebook = nbformat.read(notebooks_dir / lesson.notebook, as_version=4)
        page = out_dir / "lessons" / lesson.page
        page.write_text(
            lesson_page(notebook, lesson, lesson_nav(lessons, i), exporter), encoding="utf-8"
        )
        written.append(page)
    problems = broken_links(out_dir)
    if problems:
        raise ValueError("broken links in the site:\n  " + "\n  ".join(problems))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: build/site)"
    )
    args = parser.parse_args(argv)
    written = build_site(args.out)
    print(f"Wrote {written[0]} and {len(written) - 1} lesson pages next to it (lessons/)")


if __name__ == "__main__":
    main()
