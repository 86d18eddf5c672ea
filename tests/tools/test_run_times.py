"""One source of truth for run times: the README's course map; every lesson's line agrees."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from tools.run_times import format_line, lesson_run_time, main, rewrite_lesson
from tools.site.catalogue import parse_course_map

ROOT = Path(__file__).resolve().parents[2]
LESSONS = parse_course_map((ROOT / "README.md").read_text(encoding="utf-8"))


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.number)
def test_each_lesson_states_its_readme_run_time(lesson):
    notebook = nbformat.read(ROOT / "notebooks" / lesson.notebook, as_version=4)
    found = lesson_run_time(notebook, lesson.notebook)
    assert found is not None, f"{lesson.notebook} has no '*Run time: …*' line in its title cell"
    value, _remark = found
    assert value == lesson.run_time, (
        f"{lesson.notebook} says {value!r}, the README's course map {lesson.run_time!r}: "
        f"run `python -m tools.run_times --write {lesson.number}`"
    )


def _lesson(tmp_path: Path, title: str) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell(title),
        nbformat.v4.new_code_cell(
            "print(1)", outputs=[nbformat.v4.new_output("stream", text="1\n")]
        ),
    ]
    path = tmp_path / "07_demo.ipynb"
    nbformat.write(notebook, path)
    return path


def test_rewrite_keeps_the_remark_and_everything_else(tmp_path):
    title = "# 07 · Demo\n\nintro\n\n*Run time: about a minute (set `FULL_RUN = True` for more).*\n"
    path = _lesson(tmp_path, title)
    before = nbformat.read(path, as_version=4)
    assert rewrite_lesson(path, "~40 s")
    after = nbformat.read(path, as_version=4)
    assert after.cells[0].source == (
        "# 07 · Demo\n\nintro\n\n*Run time: ~40 s (set `FULL_RUN = True` for more).*\n"
    )
    assert after.cells[1] == before.cells[1]  # code, outputs and id untouched
    assert after.cells[0].id == before.cells[0].id
    assert lesson_run_time(after) == ("~40 s", "(set `FULL_RUN = True` for more)")
    assert not rewrite_lesson(path, "~40 s")  # already agrees: nothing to do


def test_plain_lines_are_read_and_normalised(tmp_path):
    path = _lesson(tmp_path, "# 07 · Demo\nRun time: about 20 seconds on a laptop CPU.")
    assert lesson_run_time(nbformat.read(path, as_version=4)) == (
        "about 20 seconds on a laptop CPU",
        None,
    )
    assert rewrite_lesson(path, "~20 s")
    assert nbformat.read(path, as_version=4).cells[0].source == "# 07 · Demo\n" + format_line(
        "~20 s"
    )


def test_a_dash_remark_is_kept_and_a_missing_line_is_added(tmp_path):
    path = _lesson(tmp_path, "# 10 · Demo\n*Run time: two minutes — Flower takes most of it.*")
    assert rewrite_lesson(path, "~40 s")
    assert nbformat.read(path, as_version=4).cells[0].source == (
        "# 10 · Demo\n*Run time: ~40 s — Flower takes most of it.*"
    )
    path.unlink()
    path = _lesson(tmp_path, "# 20 · Demo\n\nRuns in a while.\n")
    assert lesson_run_time(nbformat.read(path, as_version=4)) is None
    assert rewrite_lesson(path, "~80 s")
    source = nbformat.read(path, as_version=4).cells[0].source
    assert source == "# 20 · Demo\n\nRuns in a while.\n\n*Run time: ~80 s.*"


def test_two_lines_are_an_error_and_nothing_is_written(tmp_path):
    title = "*Run time: 1 s.*\n*Run time: 2 s.*"
    path = _lesson(tmp_path, title)
    with pytest.raises(ValueError, match="exactly one line"):
        rewrite_lesson(path, "~10 s")
    assert nbformat.read(path, as_version=4).cells[0].source == title


def test_command_checks_and_writes_only_the_lessons_named(tmp_path, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    (tmp_path / "notebooks").mkdir()
    for lesson in LESSONS[:3]:
        source = ROOT / "notebooks" / lesson.notebook
        notebook = nbformat.read(source, as_version=4)
        notebook.cells[0].source = notebook.cells[0].source.replace(
            "Run time: ", "Run time: an hour, not "
        )
        nbformat.write(notebook, tmp_path / "notebooks" / lesson.notebook)
    first, second, third = LESSONS[:3]
    root = ["--root", str(tmp_path)]
    assert main(["--check", first.number, second.number, *root]) == 1
    assert main(["--write", second.number, *root]) == 0
    assert main(["--check", second.number, *root]) == 0
    assert main(["--check", first.number, *root]) == 1
    notebook = nbformat.read(tmp_path / "notebooks" / third.notebook, as_version=4)
    assert lesson_run_time(notebook)[0].startswith("an hour")
    with pytest.raises(ValueError, match="no lesson"):
        main(["--check", "99", *root])
    capsys.readouterr()


def _seconds(run_time: str) -> int:
    """``"~20 s"`` → 20; ``"< 10 s"`` counts as 10 (an upper bound)."""
    match = re.fullmatch(r"(?:~|< )(\d+) s", run_time)
    assert match, f"unexpected run time {run_time!r} in the README's course map"
    return int(match.group(1))


def _lesson_numbers(spans: str) -> set[str]:
    """``"00–03, 09–14"`` → {"00", "01", "02", "03", "09", …, "14"}."""
    numbers = set()
    for span in spans.split(","):
        first, _, last = span.strip().partition("–")
        numbers |= {f"{n:02d}" for n in range(int(first), int(last or first) + 1)}
    return numbers


def test_instructors_path_times_are_the_sums_of_the_course_map() -> None:
    """Each row of INSTRUCTORS.md's path table states the README's per-lesson figures summed
    (rounded to the minute), over the lessons the row names."""
    per_lesson = {lesson.number: _seconds(lesson.run_time) for lesson in LESSONS}
    text = (ROOT / "INSTRUCTORS.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| [^|]+ \| ([0-9–, ]+) \| ~(\d+) min \|", text, flags=re.M)
    assert len(rows) == 4, rows
    for spans, minutes in rows:
        numbers = _lesson_numbers(spans)
        assert numbers <= per_lesson.keys(), spans
        total = sum(per_lesson[n] for n in numbers)
        assert round(total / 60) == int(minutes), (
            f"INSTRUCTORS.md: lessons {spans} take {total} s by the README's course map, "
            f"not ~{minutes} min"
        )
