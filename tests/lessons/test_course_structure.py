"""Course-wide conventions every lesson follows (checked on the committed notebooks)."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

from course_lib.paths import REPO_ROOT
from tools import colab
from tools.site.catalogue import Lesson, parse_course_map

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
ADDRESS = re.compile(r"0x[0-9a-f]{6,}")


def test_lessons_are_numbered_in_order() -> None:
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", p.name) for p in NOTEBOOKS)
    assert numbers == list(range(len(numbers))), "lessons must be numbered 00, 01, ... without gaps"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_conventions(path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    first, second = nb.cells[0], nb.cells[1]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {path.name[:2]} · ")
    badge = colab.colab_url(colab.load_address(), path.name, "instructor")
    assert badge in first.source, "the Colab badge must open this very notebook"
    assert second.cell_type == "code" and '"google.colab" in sys.modules' in second.source


OBJECTIVES = re.compile(r"^After this lesson you can:\n\n((?:- .+\n(?:  .+\n)*)+)", re.M)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_states_outcome_objectives(path) -> None:
    """Cell 0 says what a learner can do afterwards: 3–6 objectives, each starting with a verb
    (issue 24), instead of a list of topics."""
    source = nbformat.read(path, as_version=4).cells[0].source
    match = OBJECTIVES.search(source + "\n")
    assert match, f"{path.name}: cell 0 needs 'After this lesson you can:' and a list"
    items = re.findall(r"^- (\S+)", match.group(1), re.M)
    assert 3 <= len(items) <= 6, items
    assert not re.search(r"In this (first )?lesson( you will)?:|You will learn", source)


QUESTION = re.compile(r"^(\d+)\. \S", re.M)
ANSWER = re.compile(
    r"^   <!-- BEGIN SOLUTION -->\n   \*Answer\.\*.*?^   <!-- END SOLUTION -->$", re.M | re.S
)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_lesson_ends_with_questions_answered_in_the_instructor_edition(path) -> None:
    """The last cell asks 3–5 numbered questions; each has one answer block (inside its list
    item), which the student edition replaces with "*Your answer here.*"."""
    from tools.student_edition import MARKDOWN_STUB, make_student_notebook

    nb = nbformat.read(path, as_version=4)
    last = nb.cells[-1]
    assert last.cell_type == "markdown"
    assert last.source.startswith("## Check your understanding\n")
    numbers = [int(n) for n in QUESTION.findall(last.source)]
    assert 3 <= len(numbers) <= 5 and numbers == list(range(1, len(numbers) + 1)), numbers
    items = re.split(r"^\d+\. ", last.source, flags=re.M)[1:]
    assert [len(ANSWER.findall(item)) for item in items] == [1] * len(numbers)
    student = make_student_notebook(nb).cells[-1].source
    assert student.count(MARKDOWN_STUB) == len(numbers) and "*Answer.*" not in student


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_executed_in_order_without_errors(path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    counts = [c.execution_count for c in code]
    assert None not in counts, "commit the notebook executed (make execute)"
    assert counts == list(range(1, len(counts) + 1)), "restart and run all before committing"
    for cell in code:
        for output in cell.outputs:
            assert output.output_type != "error", f"stored error: {output.get('ename')}"
        if cell.source.startswith("# NBVAL_CHECK_OUTPUT"):
            text = "".join(
                o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                for o in cell.outputs
            )
            assert not ADDRESS.search(text), "a checked cell shows a memory address"
            assert "it/s]" not in text and "s/it]" not in text, (
                "a checked cell shows a progress bar"
            )


# -- the README course map and the docs' links ---------------------------------------------------

BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
DOCS = ["README.md", "INSTALLATION.md", "INSTRUCTORS.md"]
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _course_map() -> list[Lesson]:
    return parse_course_map((REPO_ROOT / "README.md").read_text(encoding="utf-8"))


def test_readme_course_map_lists_every_lesson_and_nothing_else() -> None:
    assert [lesson.notebook for lesson in _course_map()] == [p.name for p in NOTEBOOKS]


def test_readme_course_map_rows_match_their_notebooks() -> None:
    rows = {
        line.split("](notebooks/", 1)[1].split(")", 1)[0]: line
        for line in (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| ") and "](notebooks/" in line
    }
    for lesson in _course_map():
        heading = nbformat.read(REPO_ROOT / "notebooks" / lesson.notebook, as_version=4).cells[0]
        assert heading.source.startswith(f"# {lesson.number} · {lesson.title}\n"), (
            f"row {lesson.number}: the README's title must be the notebook's"
        )
        # The README's first reader is a learner: its badges open the student edition.
        url = colab.colab_url(colab.load_address(), lesson.notebook, "student")
        assert lesson.colab_url == url
        assert f"[![Open in Colab]({BADGE})]({url})" in rows[lesson.notebook]
        assert re.fullmatch(r"< 10 s|~\d+ s|~\d+ min", lesson.run_time), lesson.run_time


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_in_docs_resolve(doc: str) -> None:
    text = (REPO_ROOT / doc).read_text(encoding="utf-8")
    relative = [
        link for link in MARKDOWN_LINK.findall(text) if not urlsplit(link).scheme and link[0] != "#"
    ]
    missing = [link for link in relative if not (REPO_ROOT / unquote(urlsplit(link).path)).exists()]
    assert not missing, f"{doc} links to files that do not exist: {missing}"
