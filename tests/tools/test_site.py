"""The course website (tools/site): both editions built from the stored outputs, the student one
without solutions, every link resolving, nothing loaded from the network — checked in the built
files, then in headless Chromium (the last section), from one build of each edition.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path

import nbformat
import pytest

from course_lib.paths import REPO_ROOT
from tools import colab
from tools.site.build import SiteBuild, build_site
from tools.site.catalogue import load_catalogue, parse_course_map, parse_paths
from tools.site.checks import broken_links, network_loads
from tools.site.pages import (
    figure_alt_text,
    figure_alt_texts,
    local_colab_badges,
    revealing_cells,
    static_progress_bars,
    student_page,
)
from tools.student_edition import BEGIN, END

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
LESSONS = load_catalogue(README, REPO_ROOT / "notebooks")
# a marker line as the instructor's code has it (lesson 00's prose names the markers, inline)
MARKER_LINE = re.compile(r"^\s*# (?:BEGIN SOLUTION|END SOLUTION|NBVAL_CHECK_OUTPUT)\s*$", re.M)
COLAB = "https://colab.research.google.com/github/private-ai-course/private-ai/blob/main/notebooks/"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


@pytest.fixture(scope="module")
def sites() -> dict[str, SiteBuild]:
    """Both editions of the course's real site, built once for this module where ``make site``
    and ``make site-instructor`` put them (build/site/): a rebuild re-reads only changed lessons."""
    return {edition: build_site(edition) for edition in ("student", "instructor")}


def _page(site: SiteBuild, stem: str) -> str:
    return (site.html_dir / "notebooks" / f"{stem}.html").read_text(encoding="utf-8")


def _text(page: str) -> str:
    """What a reader sees of ``page``: tags and scripts removed, entities decoded."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def _site_text(site: SiteBuild) -> dict[str, str]:
    """Every text file of the built site a reader can reach: pages (as seen), the search index,
    and the notebooks the download button offers."""
    files: dict[str, str] = {}
    for path in sorted(site.html_dir.rglob("*")):
        name = path.relative_to(site.html_dir).as_posix()
        if name.startswith("_static/"):
            continue
        if path.suffix == ".html":
            files[name] = _text(path.read_text(encoding="utf-8"))
        elif path.suffix in (".js", ".ipynb", ".txt", ".md"):
            files[name] = path.read_text(encoding="utf-8")
    return files


def _solution_lines(notebook: nbformat.NotebookNode) -> list[str]:
    """The instructor's solution lines (stripped) that the student edition must not show."""
    lines: list[str] = []
    for cell in notebook.cells:
        inside = False
        for line in cell.source.splitlines():
            if BEGIN.match(line) or END.match(line):
                inside = bool(BEGIN.match(line))
            elif inside and len(line.strip()) >= 8:
                lines.append(line.strip())
    return lines


# -- the real sites ----------------------------------------------------------------------------


def test_both_editions_have_a_page_per_lesson_titled_like_its_notebook(
    sites: dict[str, SiteBuild],
) -> None:
    for site in sites.values():
        pages = sorted(p.stem for p in (site.html_dir / "notebooks").glob("*.html"))
        assert pages == [lesson.stem for lesson in LESSONS]
        for lesson in LESSONS:
            title = re.search(r"<title>(.*?)</title>", _page(site, lesson.stem), re.S)
            assert title is not None
            assert html.unescape(title[1]).startswith(f"{lesson.number} · {lesson.title} ")
            assert site.edition.label in html.unescape(title[1])


def test_home_page_shows_the_course_paths_start_and_map(sites: dict[str, SiteBuild]) -> None:
    for site in sites.values():
        home = (site.html_dir / "index.html").read_text(encoding="utf-8")
        text = _text(home)
        assert "A hands-on course in privacy-preserving deep learning" in text
        assert site.edition.label in text
        # the course map: every lesson linked in order, with its part, summary and run time
        rows = re.findall(
            r'<tr class="row-(?:odd|even)"><td><p>(\d\d)</p></td>\s*<td><p><a class="reference '
            r'internal" href="notebooks/([^"]+)\.html">.*?</a></p></td>\s*<td><p>(.*?)</p></td>\s*'
            r"<td><p>(.*?)</p></td>",
            home,
            re.S,
        )
        assert [(number, stem) for number, stem, _, _ in rows] == [
            (lesson.number, lesson.stem) for lesson in LESSONS
        ]
        assert [html.unescape(time) for *_, time in rows] == [lesson.run_time for lesson in LESSONS]
        assert any("<code" in row[2] for row in rows)  # the summaries' markdown is rendered
        for part in dict.fromkeys(lesson.part for lesson in LESSONS):
            assert f"{part}" in text
        # the paths, each lesson linked
        for path in parse_paths(README):
            assert path.name[1:] in text
            assert len(path.numbers) >= 7
        lesson_08 = 'href="notebooks/08_dp_sgd.html"><span class="std std-doc">08</span>'
        assert home.count(lesson_08) == 2  # in two paths: DP only, full course
        # how to start: Colab, and locally with the course's clone address and make lab
        address = colab.load_address()
        assert f"git clone https://github.com/{address.repository}.git" in text
        assert "make lab" in text and 'href="install.html"' in home


def test_student_site_shows_no_solution_and_no_test_marker(sites: dict[str, SiteBuild]) -> None:
    student, instructor = _site_text(sites["student"]), _site_text(sites["instructor"])
    for name, text in student.items():
        if name.endswith(".ipynb"):  # the download button's notebook: look at its cells
            text = "\n".join(cell.source for cell in nbformat.reads(text, as_version=4).cells)
        assert not MARKER_LINE.search(text), f"{name} shows a marker line"
    checked = 0
    for lesson in LESSONS:
        notebook = nbformat.read(REPO_ROOT / "notebooks" / lesson.notebook, as_version=4)
        stubbed = student_page(notebook, lesson.notebook)
        page = _text(_page(sites["student"], lesson.stem))
        download = student[f"_sources/notebooks/{lesson.notebook}"]
        for line in _solution_lines(notebook):
            if any(line in cell.source for cell in stubbed.cells):
                continue  # also written outside the solution, e.g. the stub keeps "answer = "
            checked += 1
            assert line not in page, f"{lesson.notebook}'s page shows its solution {line!r}"
            assert json.dumps(line)[1:-1] not in download, f"{lesson.notebook}'s download does"
            assert line in _text(_page(sites["instructor"], lesson.stem))
        assert "your code here" in page
    assert checked > 50  # the check had solutions to look for
    # the instructor site is everything: solutions and markers included
    for lesson in LESSONS:
        assert MARKER_LINE.search(instructor[f"notebooks/{lesson.stem}.html"]), lesson.notebook


def test_student_pages_keep_only_outputs_that_reveal_nothing(sites: dict[str, SiteBuild]) -> None:
    for lesson in LESSONS:
        notebook = nbformat.read(REPO_ROOT / "notebooks" / lesson.notebook, as_version=4)
        hidden = set(revealing_cells(notebook))
        images = [
            index
            for index, cell in enumerate(notebook.cells)
            if cell.cell_type == "code"
            for output in cell.outputs
            if "image/png" in output.get("data", {})
        ]
        student, instructor = (
            _page(sites["student"], lesson.stem),
            _page(sites["instructor"], lesson.stem),
        )
        assert instructor.count('src="../_images/') == len(images)
        assert student.count('src="../_images/') == len([i for i in images if i not in hidden])
    # lesson 00's graded answer: the instructor's run shows it, the student's page does not
    welcome = LESSONS[0].stem
    assert "patients with diabetes: 2" in _text(_page(sites["instructor"], welcome))
    assert "patients with diabetes: 2" not in _text(_page(sites["student"], welcome))
    assert "✓ 00.count_where: correct!" not in _text(_page(sites["student"], welcome))
    # while the environment report (no exercise in it) keeps its output
    assert "torch" in _text(_page(sites["student"], welcome)).split("Run time")[-1]


def test_every_internal_link_resolves(sites: dict[str, SiteBuild]) -> None:
    for site in sites.values():
        assert broken_links(site.html_dir) == []
        for lesson in LESSONS:
            page = _page(site, lesson.stem)
            assert not re.search(r'href="(?!https://|\.\./_sources/)[^"]*\.ipynb', page)
    # the check had something to check: lesson 00's text links lesson 01, and heading anchors
    welcome = _page(sites["student"], LESSONS[0].stem)
    assert re.search(r'<a class="reference internal" href="01_tensors.html">', welcome)
    assert re.search(r'href="#[a-z0-9-]+"', welcome)


def test_no_page_loads_anything_from_the_network(sites: dict[str, SiteBuild]) -> None:
    for site in sites.values():
        assert network_loads(site.html_dir) == []
        assert (site.html_dir / "_static" / "mathjax" / "MathJax.js").is_file()
        maths = _page(site, "06_global_dp_mechanisms")
        assert 'src="../_static/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"' in maths
        for page in site.html_dir.rglob("*.html"):
            assert BADGE not in page.read_text(encoding="utf-8"), page


def test_images_have_a_description_as_alt_text(sites: dict[str, SiteBuild]) -> None:
    """MyST-NB writes an output image's hash file name as its alt text unless told otherwise."""
    for edition, site in sites.items():
        charts = 0
        for path in sorted((site.html_dir / "notebooks").glob("*.html")):
            for tag in re.findall(r"<img\b[^>]*>", path.read_text(encoding="utf-8")):
                found = re.search(r'\balt="([^"]*)"', tag)
                alt = html.unescape(found.group(1)) if found else ""
                where = f"{edition}/{path.name}: {tag[:120]}"
                assert len(alt.split()) >= 2, where
                assert not re.search(r"\.(?:png|jpe?g|svg|gif)\b|_images/", alt), where
                charts += alt.startswith("Message-sequence chart of ")
        assert charts >= 5, f"{edition}: the protocol charts' descriptions are not the alt text"


def test_colab_buttons_open_the_matching_edition(sites: dict[str, SiteBuild]) -> None:
    address = colab.load_address()
    for edition, site in sites.items():
        for lesson in LESSONS:
            page = _page(site, lesson.stem)
            url = colab.colab_url(address, lesson.notebook, edition)
            launch = re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', page)
            assert launch and set(launch) == {url}, (edition, lesson.notebook, launch)
            assert "Open this lesson in Colab" in page
    assert "/blob/main/" in colab.colab_url(address, "00_welcome.ipynb", "instructor")
    assert "/blob/main/" not in colab.colab_url(address, "00_welcome.ipynb", "student")


def test_pages_have_previous_and_next_in_course_order(sites: dict[str, SiteBuild]) -> None:
    for site in sites.values():
        for i, lesson in enumerate(LESSONS):
            page = _page(site, lesson.stem)
            before = re.search(r'<a class="left-prev"\s+href="([^"]+)"', page)
            after = re.search(r'<a class="right-next"\s+href="([^"]+)"', page)
            assert before is not None
            assert before[1] == (f"{LESSONS[i - 1].stem}.html" if i else "../install.html")
            if i + 1 < len(LESSONS):
                assert after is not None and after[1] == f"{LESSONS[i + 1].stem}.html"
            else:
                assert after is None


def test_search_index_and_table_of_contents_cover_every_lesson(
    sites: dict[str, SiteBuild],
) -> None:
    for site in sites.values():
        assert (site.html_dir / "search.html").is_file()
        index = (site.html_dir / "searchindex.js").read_text(encoding="utf-8")
        titles = json.loads(re.search(r'"titles":(\[.*?\])', index)[1])
        for lesson in LESSONS:
            assert f"{lesson.number} · {lesson.title}" in titles
        sidebar = (site.html_dir / "index.html").read_text(encoding="utf-8")
        for lesson in LESSONS:
            assert f'href="notebooks/{lesson.stem}.html"' in sidebar
        assert "Differential privacy</span></p>" in sidebar  # a caption per part


def test_progress_bars_are_static_html(sites: dict[str, SiteBuild]) -> None:
    page = _page(sites["student"], "02_neural_networks")
    bars = re.findall(r'<progress value="([\d.]+)" max="([\d.]+)"></progress>', page)
    assert bars and all(value == maximum for value, maximum in bars)
    assert "widget-view" not in page and "HBox(" not in page


# -- the pieces, on small inputs --------------------------------------------------------------


def _notebook(*sources: str, outputs: bool = True) -> nbformat.NotebookNode:
    cells = []
    for source in sources:
        if source.startswith("#md "):
            cells.append(nbformat.v4.new_markdown_cell(source[4:]))
            continue
        cell = nbformat.v4.new_code_cell(source)
        if outputs:
            cell.outputs = [nbformat.v4.new_output("stream", text=f"out of {source[:12]}")]
        cells.append(cell)
    return nbformat.v4.new_notebook(cells=cells)


def test_revealing_cells_follow_what_a_solution_computes() -> None:
    notebook = _notebook(
        "#md # 00 · T",
        "data = [1, 2, 3]",  # 1
        "# BEGIN SOLUTION\nanswer = sum(data)\n# END SOLUTION",  # 2 solution
        "print(answer)",  # 3 reads the answer
        "doubled = answer * 2",  # 4 computed from it
        "print(doubled)",  # 5 so this reveals too
        "answer = 0",  # 6 rebinds it afresh: harmless again
        "print(answer, data)",  # 7
        "def f(x):\n    # BEGIN SOLUTION\n    return x\n    # END SOLUTION",  # 8 solution
        "def g():\n    return f(1)",  # 9 calls the solution inside a function
        "%time print(1)",  # 10 a magic: parsed as words, reveals nothing here
    )
    assert revealing_cells(notebook) == [2, 3, 4, 5, 8, 9]


def test_student_page_stubs_solutions_and_keeps_harmless_outputs() -> None:
    notebook = nbformat.read(REPO_ROOT / "notebooks" / "01_tensors.ipynb", as_version=4)
    page = student_page(notebook, "01_tensors.ipynb")
    hidden = set(revealing_cells(notebook))
    for index, (solved, cell) in enumerate(zip(notebook.cells, page.cells, strict=True)):
        if cell.cell_type != "code":
            continue
        assert "BEGIN SOLUTION" not in cell.source and "NBVAL_CHECK_OUTPUT" not in cell.source
        assert cell.outputs == ([] if index in hidden else solved.outputs)
    assert "blob/main/" not in page.cells[0].source  # the badge opens the student branch


def test_static_progress_bars_replace_tqdm_widgets() -> None:
    notebook = _notebook("tqdm(range(3))", "w = Button()", "tqdm(leave=False)", outputs=False)
    view = "application/vnd.jupyter.widget-view+json"
    for cell, model in zip(notebook.cells, ("box", "button", "gone"), strict=True):
        cell.outputs = [
            nbformat.v4.new_output(
                "display_data", data={view: {"model_id": model}, "text/plain": f"{model} text"}
            )
        ]

    def model(name: str, **state: object) -> dict:
        return {"model_name": name, "state": {"_model_name": name, **state}}

    children = ["IPY_MODEL_a", "IPY_MODEL_b", "IPY_MODEL_c"]
    notebook.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": {
                "box": model("HBoxModel", children=children),
                "a": model("HTMLModel", value="epochs: 100%"),
                "b": model("FloatProgressModel", value=3, max=3),
                "c": model("HTMLModel", value=" 3/3 [00:01&lt;00:00]"),
                "button": model("ButtonModel"),
                "gone": model("HBoxModel", children=children, layout="IPY_MODEL_hide"),
                "hide": model("LayoutModel", visibility="hidden"),
            }
        }
    }
    static_progress_bars(notebook)
    assert "widgets" not in notebook.metadata
    assert notebook.cells[2].outputs == []  # hidden in the notebook: not shown on the page
    bar, button = (cell.outputs[0].data for cell in notebook.cells[:2])
    assert bar == {
        "text/html": '<div class="course-progress"><span>epochs: 100%</span><progress '
        'value="3.0" max="3.0"></progress><span> 3/3 [00:01&lt;00:00]</span></div>'
    }
    assert button == {"text/plain": "button text"}  # no JavaScript to draw it: its text


def _figure_output(plain: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output(
        "display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": plain}
    )


def test_figure_alt_text_describes_the_figure_not_its_file() -> None:
    source = (
        'fig, ax = plt.subplots(1, 2)\nax[0].set_title(f"ε = {eps}: error")\n'
        'ax[0].set(xlabel="people n", ylabel="std")\nfig.suptitle("Two   panels")\n'
        'show_images(x, title="digits")'
    )
    assert figure_alt_text(source, "<Figure size 900x300 with 2 Axes>", "1 · A") == (
        "Figure with 2 panels. title: ε = …: error; x axis: people n; y axis: std; "
        "title: Two panels; title: digits."
    )
    # an output that describes itself (course_lib.diagrams' charts) keeps its description
    assert figure_alt_text(source, "Message-sequence chart of PIR.", None) == (
        "Message-sequence chart of PIR."
    )
    # no label in the code: say where the figure stands
    assert figure_alt_text("plot(x)", "<Figure size 640x480 with 1 Axes>", "2 · Noise") == (
        "Figure drawn by the code cell above in the section “2 · Noise”."
    )
    assert figure_alt_text(
        "%matplotlib inline\nplot(x)", "<IPython.core.display.Image object>", None
    ) == ("Figure drawn by the code cell above.")


def test_figure_alt_texts_fill_mystnb_image_alt_of_image_cells_only() -> None:
    notebook = _notebook("#md ## 1 · Curves\n\ntext", "plot(x)", "print(1)", "plot(y)", "plot(z)")
    notebook.cells[1].outputs = [_figure_output("<Figure size 640x480 with 1 Axes>")]
    notebook.cells[3].outputs = [_figure_output("A chart of the protocol.")]
    notebook.cells[4].outputs = [_figure_output("<Figure size 640x480 with 1 Axes>")]
    notebook.cells[4].metadata["mystnb"] = {"image": {"alt": "Set by the author."}}
    cells = figure_alt_texts(notebook).cells
    alts = [c.metadata.get("mystnb", {}).get("image", {}).get("alt") for c in cells]
    assert alts == [
        None,
        "Figure drawn by the code cell above in the section “1 · Curves”.",
        None,
        "A chart of the protocol.",
        "Set by the author.",
    ]


def test_local_colab_badges_become_text_links() -> None:
    url = f"{COLAB}00_a.ipynb"
    notebook = _notebook(f"#md # 00 · A\n\n[![Open In Colab]({BADGE})]({url}) and more")
    assert local_colab_badges(notebook).cells[0].source == (
        f"# 00 · A\n\n[Open this lesson in Colab]({url}) and more"
    )


def test_network_loads_are_found(tmp_path: Path) -> None:
    (tmp_path / "_static").mkdir()
    (tmp_path / "index.html").write_text(
        '<script src="https://cdn.example.org/lib.js"></script><script src="_static/ok.js">'
        '</script><link rel="stylesheet" href="//fonts.example.org/css">'
        '<link rel="canonical" href="https://example.org/">'  # not fetched
        '<a href="https://example.org/read-more">a link is not a load</a>'
        '<img src="data:image/png;base64,AAAA"><img srcset="a.png 1x, https://x.org/b.png 2x">'
        '<div style="background: url(https://x.org/bg.png)"></div>'
        "<style>@import 'https://x.org/more.css';</style>",
        encoding="utf-8",
    )
    (tmp_path / "_static" / "ok.js").write_text(
        'load("https://cdn.example.org/polyfill.min.js?v=1"); see("https://example.org/docs")',
        encoding="utf-8",
    )
    (tmp_path / "_static" / "a.css").write_text(
        "@font-face { src: url('https://x.org/f.woff2') }", encoding="utf-8"
    )
    (tmp_path / "_static" / "fragment.html").write_text(
        '<script src="{{ pathto(1) }}"></script>', encoding="utf-8"
    )
    assert network_loads(tmp_path) == [
        "_static/a.css: https://x.org/f.woff2",
        "_static/ok.js: https://cdn.example.org/polyfill.min.js",
        "index.html: https://cdn.example.org/lib.js",
        "index.html: //fonts.example.org/css",
        "index.html: https://x.org/b.png",
        "index.html: https://x.org/bg.png",
        "index.html: https://x.org/more.css",
    ]


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


# -- the catalogue: the README course map, checked against the notebooks -----------------------

_HEADER = "| # | Lesson | What you learn | Run time | Colab |\n|---|---|---|---|---|\n"


def _row(name: str, title: str, summary: str = "things", time: str = "< 10 s") -> str:
    return (
        f"| {name[:2]} | [{title}](notebooks/{name}) | {summary} | {time} "
        f"| [![Open in Colab]({BADGE})]({COLAB}{name}) |\n"
    )


def _readme(rows: str, header: str = _HEADER, paths: str = "Paths: *all* 00–01.") -> str:
    return (
        f"# Tiny course\n\nLearn **two** things.\n\n## Course map\n\n{header}{rows}\n{paths}\n"
        "More text.\n"
    )


def _lesson(folder: Path, name: str, title: str, text: str = "") -> None:
    folder.mkdir(exist_ok=True)
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(
                f"# {name[:2]} · {title}\n\n[![Open In Colab]({BADGE})]({COLAB}{name})\n\n{text}"
            ),
            nbformat.v4.new_code_cell(colab.install_cell(colab.load_address(), "instructor")),
            nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(6 * 7)"),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python", "pygments_lexer": "ipython3"},
        },
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
    assert (second.part, second.run_time, second.stem) == ("Part B", "~50 s", "01_next_one")


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


def test_parse_paths() -> None:
    readme = _readme(
        "", paths="Paths: *DP only* 00–02 · *two parts* 00, 03–04\n· *full course* 00–04 (all)."
    )
    assert [(p.name, p.numbers, p.note) for p in parse_paths(readme)] == [
        ("DP only", ("00", "01", "02"), ""),
        ("two parts", ("00", "03", "04"), ""),
        ("full course", ("00", "01", "02", "03", "04"), "(all)"),
    ]
    real = {path.name: path.numbers for path in parse_paths(README)}
    assert real["full course"] == tuple(lesson.number for lesson in LESSONS)
    for bad, message in [
        ("No paths here.", "no paragraph starting with 'Paths:'"),
        ("Paths: *DP* 00–02 · everything.", "is not '*name* NN–NN"),
        ("Paths: *DP* 05–02.", "runs backwards"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_paths(_readme("", paths=bad))


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


def test_build_refuses_a_dead_link_and_an_unknown_edition(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="edition must be one of"):
        build_site("teacher", tmp_path / "never")
    assert not (tmp_path / "never").exists()
    notebooks = tmp_path / "notebooks"
    _lesson(notebooks, "00_a.ipynb", "Alpha", "Next: [lesson 01](01_b.ipynb).")
    _lesson(notebooks, "01_b.ipynb", "Beta", "Set-up: [install](../INSTALLATION.md).")
    readme = tmp_path / "README.md"
    rows = "| | **P** | | | |\n" + _row("00_a.ipynb", "Alpha") + _row("01_b.ipynb", "Beta")
    readme.write_text(_readme(rows), encoding="utf-8")
    install = tmp_path / "INSTALL.md"
    install.write_text("# Installing\n\nRun `make lab`.\n", encoding="utf-8")
    kwargs = {"readme": readme, "notebooks_dir": notebooks, "install": install}
    with pytest.raises(ValueError, match=r"01_b\.ipynb.*INSTALLATION\.md"):
        build_site("student", tmp_path / "site", work_dir=tmp_path / "work", **kwargs)
    # everything else was written and is sound: the lesson link points at the page
    page = (tmp_path / "site" / "notebooks" / "00_a.html").read_text(encoding="utf-8")
    assert 'href="01_b.html"' in page and "NBVAL_CHECK_OUTPUT" not in page
    # a lesson that is gone leaves no page behind once the link is fixed
    _lesson(notebooks, "01_b.ipynb", "Beta", "Set-up: see the home page.")
    (notebooks / "00_a.ipynb").unlink()
    rows = "| | **P** | | | |\n" + _row("01_b.ipynb", "Beta")
    readme.write_text(_readme(rows, paths="Paths: *all* 01."), encoding="utf-8")
    built = build_site("student", tmp_path / "site", work_dir=tmp_path / "work", **kwargs)
    assert [lesson.notebook for lesson in built.lessons] == ["01_b.ipynb"]
    assert not (tmp_path / "work" / "source" / "notebooks" / "00_a.ipynb").exists()
    assert sorted(p.name for p in (tmp_path / "site" / "notebooks").glob("*.html")) == ["01_b.html"]


# -- in a real browser: headless Chromium, no network, the student edition ----------------------
#
# The browser opens the built pages from disk (file://) with every request to another host
# refused and recorded, and checks the home page and one lesson of each part: formulas typeset by
# the bundled MathJax (no TeX source left on the page), every image loaded. Screenshots go to
# build/site-screenshots/ (build artefacts, not in git) for a person to look at.

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = REPO_ROOT / "build" / "site-screenshots"
# the flags of shared/notes/libraries.md, and no host name resolves: nothing can reach a network
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
# TeX a reader must never see: a control word (\varepsilon, \frac) or a maths delimiter
RAW_TEX = re.compile(r"\\[A-Za-z]+|\\[()[\]]|\$\$")
# the page's text outside code, scripts and MathJax's own hidden copies of each formula
VISIBLE_PROSE = """() => {
  const body = document.body.cloneNode(true);
  body.querySelectorAll('pre, code, script, style, .MathJax_Preview, .MJX_Assistive_MathML')
      .forEach(node => node.remove());
  return body.textContent;
}"""
TYPESET = "() => new Promise(done => MathJax.Hub.Queue(() => done(true)))"


def _formula_count(notebook: nbformat.NotebookNode) -> int:
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    return len(re.findall(r"\$\$|\$(?=\S)", markdown))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium (Debian's), driven by Playwright."""
    playwright = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Chromium for the site's browser test: .ci/run installs it")
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def _pages(site: SiteBuild) -> dict[str, tuple[str, int]]:
    """Screenshot name → (page, images from lesson outputs it shows): the home page, and for each
    part of the course its lesson with the most formulas."""
    pages = {"home": ("index.html", 0)}
    for part, members in groupby(site.lessons, key=lambda lesson: lesson.part):
        notebooks = {
            lesson.stem: nbformat.read(REPO_ROOT / "notebooks" / lesson.notebook, as_version=4)
            for lesson in members
        }
        stem = max(notebooks, key=lambda name: _formula_count(notebooks[name]))
        notebook, hidden = notebooks[stem], set(revealing_cells(notebooks[stem]))
        images = sum(
            "image/png" in output.get("data", {})
            for index, cell in enumerate(notebook.cells)
            if cell.cell_type == "code" and index not in hidden
            for output in cell.outputs
        )
        pages[f"{part.split(' · ')[0].replace(' ', '-')}-{stem}"] = (
            f"notebooks/{stem}.html",
            images,
        )
    return pages


def test_pages_render_offline_with_formulas_and_images(
    sites: dict[str, SiteBuild], browser
) -> None:
    site = sites["student"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages = _pages(site)
    assert len(pages) == 1 + len({lesson.part for lesson in site.lessons})
    refused: list[str] = []
    formulas: dict[str, int] = {}
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def only_local(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.startswith(("file://", "data:")):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    for name, (path, images) in pages.items():
        page.goto((site.html_dir / path).as_uri(), wait_until="load")
        if page.evaluate("() => typeof MathJax !== 'undefined'"):
            page.evaluate(TYPESET)  # resolves once MathJax has typeset the page
        sources = page.locator('script[type^="math/tex"]').count()
        rendered = page.locator(".MathJax, .MathJax_Display").count()
        assert page.locator(".MathJax_Error, merror").count() == 0, name
        assert rendered >= sources, f"{name}: {rendered} of {sources} formulas typeset"
        formulas[name] = sources
        prose = page.evaluate(VISIBLE_PROSE)
        assert not RAW_TEX.findall(prose), f"{name} shows raw TeX: {RAW_TEX.findall(prose)[:5]}"
        shown = page.evaluate(
            "() => Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth > 0])"
        )
        assert all(ok for _, ok in shown), f"{name}: images not loaded {shown}"
        assert sum("/_images/" in src for src, _ in shown) == images, name
        page.screenshot(path=SCREENSHOTS / f"{name}.png")
        first = page.locator(".MathJax_Display, .MathJax").first
        if sources:
            first.scroll_into_view_if_needed()
            page.screenshot(path=SCREENSHOTS / f"{name}-formula.png")
    context.close()
    assert refused == []
    # the check had formulas to look at: Part II's lesson is full of them (ε, δ, sums)
    assert formulas["Part-II-06_global_dp_mechanisms"] >= 20
    assert sum(count > 0 for count in formulas.values()) >= 3


def test_search_finds_a_lesson_offline(sites: dict[str, SiteBuild], browser) -> None:
    site = sites["student"]
    page = browser.new_page()
    page.goto((site.html_dir / "search.html").as_uri() + "?q=laplace", wait_until="load")
    results = page.locator("#search-results a")
    results.first.wait_for(timeout=30_000)
    found = [results.nth(i).get_attribute("href") for i in range(results.count())]
    assert any("06_global_dp_mechanisms.html" in href for href in found), found
    page.close()
