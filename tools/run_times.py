"""Keep each lesson's "Run time" line equal to its row in the README's course map.

The README's course map is the one place a lesson's run time is written (the site's catalogue
reads it too, :func:`tools.site.catalogue.parse_course_map`). Each lesson repeats it in its title
cell as ``*Run time: ~20 s.*``, optionally followed by a remark (in brackets or after a dash)
that the rewrite keeps: ``*Run time: ~40 s (set `FULL_RUN = True` for longer runs).*``. A lesson
without the line gets it appended to its title cell.

    python -m tools.run_times --check          # exit 1 when a lesson disagrees with the README
    python -m tools.run_times --write          # rewrite the lessons' lines from the README
    python -m tools.run_times --write 01 02    # only these lessons

Only markdown is touched: no lesson is executed and no output changes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

from tools.site.catalogue import Lesson, parse_course_map

__all__ = ["format_line", "lesson_run_time", "main", "rewrite_lesson"]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: A lesson's run-time line: ``*Run time: <value>[ (<remark>)].*`` (italics and full stop optional
#: when reading, always written).
_LINE = re.compile(
    r"^\*?Run time: (?P<value>[^()\n]+?)(?: (?P<remark>\(.*\)|— .*?))?\.?\*?[ \t]*$",
    re.MULTILINE | re.IGNORECASE,
)


def format_line(run_time: str, remark: str | None = None) -> str:
    """The line a lesson shows for ``run_time`` (the README's value), keeping ``remark``."""
    return f"*Run time: {run_time}{f' {remark}' if remark else ''}.*"


def _title_cell(notebook: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    if not notebook.cells or notebook.cells[0].cell_type != "markdown":
        raise ValueError(f"{name}: a lesson starts with its markdown title cell")
    return notebook.cells[0]


def lesson_run_time(
    notebook: nbformat.NotebookNode, name: str = "lesson"
) -> tuple[str, str | None] | None:
    """``(value, remark)`` of the run-time line in a lesson's title cell; None when it has none.

    Raises ValueError, naming the lesson, when the title cell has more than one such line.
    """
    matches = list(_LINE.finditer(_title_cell(notebook, name).source))
    if len(matches) > 1:
        raise ValueError(
            f"{name}: its title cell needs exactly one line '*Run time: … .*', found {len(matches)}"
        )
    return (matches[0]["value"].strip(), matches[0]["remark"]) if matches else None


def rewrite_lesson(path: Path, run_time: str, *, write: bool = True) -> bool:
    """Make lesson ``path`` say ``run_time``; True when its line differed (and, with ``write``,
    was rewritten in place — markdown only, outputs and cell ids untouched)."""
    notebook = nbformat.read(path, as_version=4)
    found = lesson_run_time(notebook, path.name)
    cell = _title_cell(notebook, path.name)
    if found is None:
        wanted = f"{cell.source.rstrip()}\n\n{format_line(run_time)}"
    else:
        wanted = _LINE.sub(lambda _: format_line(run_time, found[1]), cell.source, count=1)
    if wanted == cell.source:
        return False
    if write:
        cell.source = wanted
        nbformat.write(notebook, path)
    return True


def _lessons(readme: Path, numbers: list[str]) -> list[Lesson]:
    lessons = parse_course_map(readme.read_text(encoding="utf-8"))
    unknown = set(numbers) - {lesson.number for lesson in lessons}
    if unknown:
        raise ValueError(f"the README's course map has no lesson {sorted(unknown)}")
    return [lesson for lesson in lessons if not numbers or lesson.number in numbers]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("numbers", nargs="*", help="two-digit lesson numbers (default: all)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite lessons from the README")
    mode.add_argument("--check", action="store_true", help="only report; exit 1 if any differ")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    lessons = _lessons(args.root / "README.md", args.numbers)
    differing = [
        lesson
        for lesson in lessons
        if rewrite_lesson(
            args.root / "notebooks" / lesson.notebook, lesson.run_time, write=args.write
        )
    ]
    names = ", ".join(lesson.number for lesson in differing) or "-"
    if args.check:
        print(f"{len(differing)} of {len(lessons)} lessons disagree with the README: {names}")
        return 1 if differing else 0
    print(f"rewrote the run-time line of {len(differing)} of {len(lessons)} lessons: {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
