"""Cost of grading a class: N copies of lesson 05, sandboxed, as ``make grade`` runs them.

    COURSE_OFFLINE=1 .venv/bin/python benchmarks/grading.py [--students 40] [--jobs 2]

Each submission is the instructor's solved ``05_local_dp_randomized_response.ipynb`` (every cell
of the lesson runs, plots included), graded by :func:`tools.grade.grade_all` with bubblewrap as in
real grading: a fresh sandbox per submission runs the notebook, then its four function answers are
called in the sandbox on the course checks' and the hidden cases' inputs. Prints the wall-clock
seconds for the batch and per submission, and checks that every submission scored 4/4 (a benchmark
of a grader that grades wrongly measures nothing).

The target of issue 22: 40 submissions in ≤ 600 s on 2 cores (``--jobs 2``). Measured on the
course machine (2 cores, shared with other jobs: load average about 13) with the command above:
40 submissions in 388 s, 9.7 s each, every one 4/4.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tools.grade import grade_all, parse_options
from tools.grading.lesson import lesson_notebook


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.students < 1 or args.jobs < 1:
        raise ValueError("--students and --jobs must be at least 1")
    solved = lesson_notebook("05")
    with tempfile.TemporaryDirectory(prefix="grading-bench-") as tmp:
        folder = Path(tmp) / "submissions"
        folder.mkdir()
        for k in range(args.students):
            shutil.copyfile(solved, folder / f"student{k:03d}.ipynb")
        options = parse_options([str(folder), "--jobs", str(args.jobs), "--seed", "1"])
        began = time.perf_counter()
        lesson, grades = grade_all(folder, options)
        seconds = time.perf_counter() - began
    wrong = [g.student for g in grades if g.total != len(g.scores)]
    print(
        f"lesson {lesson}: {args.students} submissions, --jobs {args.jobs}: {seconds:.0f} s "
        f"({seconds / args.students:.1f} s per submission)"
    )
    if wrong:
        sys.exit(f"graded wrongly (instructor's answers not 4/4): {wrong}")


if __name__ == "__main__":
    main()
