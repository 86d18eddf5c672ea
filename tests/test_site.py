"""The course website: a page per lesson, an index of them all, and no link that leads nowhere."""

from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat
import pytest

from course_lib.paths import REPO_ROOT
from course_lib.site import (
    broken_links,
    build_site,
    inline_markdown,
    load_catalogue,
    main,
    parse_course_map,
    rewrite_lesson_links,
)

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
COLAB = "https://colab.research.google.com/github/private-ai-course/private-ai/blob/main/notebooks/"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The course's real site, built once for this module (about 10 s for 20 lessons)."""
    out = tmp_path_factory.mktemp("site")
    main(["--out", str(out)])
    return out


def _title(path: Path) -> str:
    return nbformat.read(path, as_version=4).cells[0].source.partition("\n")[0].split(" · ", 1)[1]


# -- the real site ------------------------------------------------------------------------------


def test_every_lesson_has_a_page_titled_like_its_notebook(site: Path) -> None:
    pages = sorted(p.name for p in (site / "lessons").glob("*.html"))
    assert pages == [p.stem + ".html" for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        page = (site / "lessons" / f"{path.stem}.html").read_text(encoding="utf-8")
        assert f"<title>{path.name[:2]} · {html.escape(_title(path), quote=False)}</title>" in page


def test_index_links_every_lesson_grouped_by_part(site: Path) -> None:
    index = (site / "index.html").read_text(encoding="utf-8")
    linked = re.findall(r'<a href="lessons/([^"]+)">', index)
    assert linked == [p.stem + ".html" for p in NOTEBOOKS]
    assert "<h1>Private AI</h1>" in index
    parts = re.findall(r'<tr class="part"><th colspan="5">([^<]+)</th>', index)
    assert parts[:4] == [
        "Part I · Foundations",
        "Part II · Differential privacy",
        "Part III · Federated learning",
        "Part IV · Encrypted computation",
    ]
    # the summary's markdown is rendered, the run time escaped
    assert "a network by hand, <code>nn.Module</code>, training on MNIST" in index
    lessons = load_catalogue(
        (REPO_ROOT / "README.md").read_text(encoding="utf-8"), NOTEBOOKS[0].parent
    )
    for lesson in lessons:
        assert f'<td class="time">{html.escape(lesson.run_time)}</td>' in index
    assert '<td class="time">&lt; 10 s</td>' in index


def test_lesson_pages_link_index_previous_and_next(site: Path) -> None:
    pages = [(site / "lessons" / f"{p.stem}.html").read_text(encoding="utf-8") for p in NOTEBOOKS]
    for i, page in enumerate(pages):
        assert page.count('href="../index.html"') == 2  # nav bar at the top and the bottom
        prev = re.findall(r'<a href="([^"]+)" rel="prev">', page)
        following = re.findall(r'<a href="([^"]+)" rel="next">', page)
        assert prev == ([f"{NOTEBOOKS[i - 1].stem}.html"] * 2 if i > 0 else [])
        assert following == ([f"{NOTEBOOKS[i + 1].stem}.html"] * 2 if i + 1 < len(pages) else [])


def test_every_internal_link_and_anchor_resolves(site: Path) -> None:
    assert broken_links(site) == []
    for page in (site / "lessons").glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r'href="(?!https://)[^"]*\.ipynb', text), f"{page.name}: .ipynb link"
    # the check had something to check: lesson 00's text links lesson 01, and its headings' anchors
    welcome = (site / "lessons" / f"{NOTEBOOKS[0].stem}.html").read_text(encoding="utf-8")
    assert welcome.count(f'href="{NOTEBOOKS[1].stem}.html"') == 3  # 2 in the nav bars, 1 in text
    assert re.search(r'href="#[^"]+"', welcome), "no heading anchors"


# -- link rewriting and checking ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ('href="01_tensors.ipynb"', 'href="01_tensors.html"'),
        ('href="./01_tensors.ipynb#Exercises"', 'href="01_tensors.html#Exercises"'),
        (
            'href="notebooks/13_secure_aggregation_and_dp_fl.ipynb"',
            'href="13_secure_aggregation_and_dp_fl.html"',
        ),
        ('href="../notebooks/02_neural_networks.ipynb"', 'href="02_neural_networks.html"'),
        (f'href="{COLAB}01_tensors.ipynb"', f'href="{COLAB}01_tensors.ipynb"'),
        ('href="scratch.ipynb"', 'href="scratch.ipynb"'),
        ('src="01_tensors.ipynb"', 'src="01_tensors.ipynb"'),
    ],
)
def test_rewrite_lesson_links(link: str, expected: str) -> None:
    assert rewrite_lesson_links(f"<p><a {link}>x</a></p>") == f"<p><a {expected}>x</a></p>"


def test_broken_links_are_found(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "lessons").mkdir(parents=True)
    (site / "lessons" / "a.html").write_text(
        '<h2 id="Deriving-%CE%B5">x</h2><h2 id="Plain">y</h2>'
        '<a href="../index.html">ok</a> <a href="#Deriving-%CE%B5">ok</a> <a href="#Plain">ok</a>'
        '<a href="b.html">missing page</a> <a href="#Nowhere">missing anchor</a>'
        '<img src="data:image/png;base64,AAAA"> <a href="https://example.org/x.html">external</a>'
        '<a href="mailto:a@b.c">mail</a> <a href="../../outside.html">outside the site</a>',
        encoding="utf-8",
    )
    (tmp_path / "outside.html").write_text("exists, but not in the site", encoding="utf-8")
    (site / "index.html").write_text(
        '<a href="lessons/a.html#Plain">ok</a><a href="lessons/a.html#Gone">bad anchor</a>'
        '<link href="style.css">',
        encoding="utf-8",
    )
    assert broken_links(site) == [
        "index.html: 'lessons/a.html#Gone': a.html has no id 'Gone'",
        "index.html: 'style.css' names no file of the site",
        "lessons/a.html: 'b.html' names no file of the site",
        "lessons/a.html: '#Nowhere': a.html has no id 'Nowhere'",
        "lessons/a.html: '../../outside.html' names no file of the site",
    ]


def test_inline_markdown() -> None:
    assert inline_markdown("**bold**, *it*, `a*b*<c>` & <x>") == (
        "<strong>bold</strong>, <em>it</em>, <code>a*b*&lt;c&gt;</code> &amp; &lt;x&gt;"
    )


# -- the catalogue: the README course map, checked against the notebooks ------------------------

_HEADER = "| # | Lesson | What you learn | Run time | Colab |\n|---|---|---|---|---|\n"


def _row(name: str, title: str, summary: str = "things", time: str = "< 10 s") -> str:
    return (
        f"| {name[:2]} | [{title}](notebooks/{name}) | {summary} | {time} "
        f"| [![Open in Colab]({BADGE})]({COLAB}{name}) |\n"
    )


def _readme(rows: str, header: str = _HEADER) -> str:
    return f"# Tiny course\n\nLearn **two** things.\n\n## Course map\n\n{header}{rows}\nAfter.\n"


def _lesson(folder: Path, name: str, title: str, text: str = "") -> None:
    folder.mkdir(exist_ok=True)
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(f"# {name[:2]} · {title}\n\n{text}"),
            nbformat.v4.new_code_cell("print(6 * 7)"),
        ]
    )
    nbformat.write(notebook, folder / name)


def test_parse_course_map() -> None:
    rows = "| | **Part A · Start** | | | |\n" + _row("00_hello.ipynb", "Hello: hi", "`x`, **y**")
    rows += "| | **Part B** | | | |\n" + _row("01_next_one.ipynb", "Next", time="~50 s")
    first, second = parse_course_map(_readme(rows))
    assert (first.number, first.title, first.notebook, first.summary) == (
        "00",
        "Hello: hi",
        "00_hello.ipynb",
        "`x`, **y**",
    )
    assert (first.run_time, first.colab_url, first.part) == (
        "< 10 s",
        COLAB + "00_hello.ipynb",
        "Part A · Start",
    )
    assert (second.part, second.run_time, second.page) == ("Part B", "~50 s", "01_next_one.html")


@pytest.mark.parametrize(
    ("readme", "message"),
    [
        ("# T\n\nNo map here.\n", "no '## Course map' section"),
        (_readme("", header=""), "no table"),
        (_readme("| | **P** | | | |\n", header="| # | Lesson |\n|---|---|\n"), "columns are"),
        (_readme(_row("00_a.ipynb", "A")), "before any"),
        (_readme("| | **P** | | | |\n" + _row("00_a.ipynb", "A", summary="")), "needs a summary"),
        (_readme("| | **P** | | | |\n| 00 | [A](00_a.ipynb) | s | t | c |\n"), "needs 'NN"),
        (
            _readme("| | **P** | | | |\n" + _row("00_a.ipynb", "A").replace("| 00 |", "| 01 |")),
            "links to lesson",
        ),
        (_readme("| | **P** | | |\n"), "4 cells"),
    ],
)
def test_malformed_course_maps_are_refused(readme: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_course_map(readme)


def test_catalogue_must_match_the_notebooks(tmp_path: Path) -> None:
    notebooks = tmp_path / "notebooks"
    _lesson(notebooks, "00_a.ipynb", "Alpha")
    _lesson(notebooks, "01_b.ipynb", "Beta")
    both = "| | **P** | | | |\n" + _row("00_a.ipynb", "Alpha") + _row("01_b.ipynb", "Beta")
    assert [lesson.title for lesson in load_catalogue(_readme(both), notebooks)] == [
        "Alpha",
        "Beta",
    ]
    cases = {
        "not in the map ['01_b.ipynb']": both.replace(_row("01_b.ipynb", "Beta"), ""),
        "no such notebook ['02_c.ipynb']": both + _row("02_c.ipynb", "Gamma"),
        "'Beta' in its notebook but 'Bet' in the README": both.replace("[Beta]", "[Bet]"),
        "once, in order": "| | **P** | | | |\n"
        + _row("01_b.ipynb", "Beta")
        + _row("00_a.ipynb", "Alpha"),
    }
    for message, rows in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            load_catalogue(_readme(rows), notebooks)


def test_build_site_refuses_a_lesson_with_a_dead_link(tmp_path: Path) -> None:
    notebooks = tmp_path / "notebooks"
    _lesson(notebooks, "00_a.ipynb", "Alpha", "Next: [lesson 01](01_b.ipynb).")
    _lesson(notebooks, "01_b.ipynb", "Beta", "Set-up: [install](../INSTALLATION.md).")
    readme = tmp_path / "README.md"
    rows = "| | **P** | | | |\n" + _row("00_a.ipynb", "Alpha") + _row("01_b.ipynb", "Beta")
    readme.write_text(_readme(rows), encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape("'../INSTALLATION.md' names no file")):
        build_site(tmp_path / "site", readme=readme, notebooks_dir=notebooks)
    # everything else was written and is sound: the lesson link was rewritten
    assert 'href="01_b.html"' in (tmp_path / "site" / "lessons" / "00_a.html").read_text()
    assert 'href="lessons/00_a.html">Alpha</a>' in (tmp_path / "site" / "index.html").read_text()
    assert "Learn <strong>two</strong> things." in (tmp_path / "site" / "index.html").read_text()


def test_rebuilding_removes_pages_of_lessons_that_are_gone(tmp_path: Path) -> None:
    notebooks = tmp_path / "notebooks"
    _lesson(notebooks, "00_a.ipynb", "Alpha", "Hello.")
    readme = tmp_path / "README.md"
    readme.write_text(_readme("| | **P** | | | |\n" + _row("00_a.ipynb", "Alpha")), "utf-8")
    stale = tmp_path / "site" / "lessons" / "00_old_name.html"
    stale.parent.mkdir(parents=True)
    stale.write_text('<a href="missing.html">dead</a>', encoding="utf-8")
    written = build_site(tmp_path / "site", readme=readme, notebooks_dir=notebooks)
    assert not stale.exists()
    assert sorted(p.name for p in (tmp_path / "site" / "lessons").iterdir()) == ["00_a.html"]
    assert len(written) == 2
