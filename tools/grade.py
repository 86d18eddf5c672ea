"""Grade a folder of submitted notebooks: ``python -m tools.grade SUBMISSIONS --out grades.csv``.

A submission is ``SUBMISSIONS_DIR/STUDENT.ipynb`` or ``SUBMISSIONS_DIR/STUDENT/<one notebook>``;
the file (or folder) name is the student id. All submissions are of one lesson (``--lesson NN``,
else read from their ``check("NN.…")`` calls). For each one, in ``--jobs`` parallel workers, in a
bubblewrap sandbox of its own (:mod:`tools.grading.sandbox`) with a scratch folder of its own:

1. :mod:`tools.grading.execute` runs it top to bottom — a cell is interrupted after
   ``--cell-timeout`` seconds, the sandbox killed after ``--notebook-timeout`` — and copies each
   exercise's answer out right after the cell that checks it (values as plain data);
2. :mod:`tools.grading.judge`, in this process, judges the answers with the course's own checkers
   and the hidden cases drawn from ``--seed``; a function answer is called inside the sandbox on
   the judge's inputs, ``--function-timeout`` seconds per exercise, and only its results come back.

Writes ``grades.csv`` (one row per student: 1/0 per exercise, the total, what went wrong while
running) and a feedback file per student (``--feedback``, default ``<out>_feedback/STUDENT.md``).
Nothing the notebook prints is read: a fake ✓ line earns nothing. See INSTRUCTORS.md, "Grading
submissions", for the walkthrough and the threat model.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_lib.paths import REPO_ROOT
from tools.grading.judge import LIBRARY_RULES, Callee, FunctionStopped, judge_all
from tools.grading.lesson import (
    infer_lesson,
    lesson_exercises,
    lesson_notebook,
    reference_solutions,
)
from tools.grading.sandbox import (
    Sandbox,
    SandboxUnavailable,
    UnsafeFile,
    read_scratch_file,
    require_bwrap,
)

__all__ = ["Grade", "find_submissions", "grade_all", "main"]


@dataclass
class Grade:
    """One student's result: 1/0 per exercise, what went wrong running the notebook, and why each
    exercise passed or failed."""

    student: str
    scores: dict[str, int]
    reasons: dict[str, str]
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.scores.values())


def find_submissions(folder: Path) -> dict[str, Path]:
    """Student id → notebook. ValueError for a folder holding no notebook or several, a student
    id used twice, or no submissions at all."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of submissions")
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            notebooks = sorted(p for p in entry.glob("*.ipynb") if not p.name.startswith("."))
            if len(notebooks) != 1:
                raise ValueError(f"{entry} should hold one notebook, it holds {len(notebooks)}")
            student, notebook = entry.name, notebooks[0]
        elif entry.suffix == ".ipynb":
            student, notebook = entry.stem, entry
        else:
            continue
        if student in found:
            raise ValueError(
                f"student id {student!r} has two submissions: {found[student]}, {notebook}"
            )
        found[student] = notebook
    if not found:
        raise ValueError(f"no .ipynb submissions in {folder}")
    return found


def _events(path: Path) -> list[dict[str, Any]]:
    """The runner's events, written inside the sandbox: a line that is not a JSON object is
    skipped (the submission could have written it; it concerns that submission only)."""
    try:
        raw = read_scratch_file(path.parent, path.name, 2**24)
    except UnsafeFile:
        return []
    if raw is None:
        return []
    events = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def _problems(events: list[dict[str, Any]], *, finished: bool) -> list[str]:
    """What went wrong running the notebook, from the runner's events; when it did not finish
    (and was not stopped for time), the last cell it started is the one that killed it."""
    problems = []
    started = [e["start"] for e in events if type(e.get("start")) is int]
    if not finished and started and not any(e.get("done") is True for e in events):
        events = [*events, {"cell": started[-1], "died": True}]
    for event in events:
        cell = event.get("cell")
        if type(cell) is not int:
            continue
        if event.get("died"):
            problems.append(
                f"code cell {cell} stopped the kernel (it crashed or was killed): the cells "
                "before it counted, the cells after it did not run"
            )
        else:
            what = "ran past the cell timeout" if event.get("timeout") is True else "raised"
            problems.append(f"code cell {cell} {what} ({str(event.get('error'))[:300]})")
    return problems


def grade_one(
    student: str,
    notebook: Path,
    plan: list[dict[str, Any]],
    references: dict[str, Any],
    scratch: Path,
    options: argparse.Namespace,
) -> Grade:
    """Run one submission in its own sandbox and scratch folder, then judge what it left there
    (see the module docstring)."""
    sandbox = Sandbox(
        scratch,
        bwrap=options.bwrap,
        memory_gib=options.memory,
        cpu_seconds=options.notebook_timeout,
    )
    sandbox.prepare()
    shutil.copyfile(notebook, scratch / "submission.ipynb")
    (scratch / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    grade = Grade(student, {e["name"]: 0 for e in plan}, {})
    python = [sys.executable, "-m", "tools.grading.execute"]
    run = [*python, "run", "submission.ipynb", "plan.json", "--cell-timeout"]
    run.append(str(options.cell_timeout))
    serve = [*python, "serve"]
    if options.sandbox:
        callee = Callee(sandbox, sandbox.wrap(run), sandbox.wrap(serve))
    else:
        callee = Callee(sandbox, run_here(run, scratch), run_here(serve, scratch))
    callee.deadline = time.monotonic() + options.notebook_timeout
    stopped = None
    try:
        callee.start()  # runs the notebook; ready to serve its functions once it ran
    except FunctionStopped as error:
        stopped = str(error)
    callee.deadline = float("inf")
    events = _events(scratch / "events.jsonl")
    grade.problems += _problems(events, finished=stopped is None)
    capture_errors = {
        str(e["exercise"]): str(e["capture_error"]) for e in events if "capture_error" in e
    }
    if stopped == "ran past the time limit":
        grade.problems.append(f"notebook stopped after the {options.notebook_timeout} s limit")
    elif stopped is not None and not any(e.get("start") for e in events):
        grade.problems.append(f"the notebook could not be run ({callee.last_error_line()})")
    verdicts = judge_all(
        plan,
        references,
        callee,
        seed=options.seed,
        function_timeout=options.function_timeout,
        library_answers=options.library_answers,
    )
    for name, verdict in verdicts:
        grade.scores[name] = int(verdict.passed)
        reason = verdict.reason
        if name in capture_errors and not verdict.passed:
            reason += f" (copying it out of your notebook failed: {capture_errors[name]})"
        grade.reasons[name] = reason
        if verdict.note:
            grade.problems.append(verdict.note)
    return grade


def run_here(command: list[str], scratch: Path) -> list[str]:
    """``command`` run in ``scratch`` *without* the sandbox — only for the test that shows what
    the sandbox stops (``_sandbox=False`` in :func:`grade_all`); never for real grading."""
    return ["env", "-C", str(scratch), "COURSE_OFFLINE=1", "OMP_NUM_THREADS=1",
            f"PYTHONPATH={REPO_ROOT}", *command]  # fmt: skip


def grade_all(folder: Path, options: argparse.Namespace) -> tuple[str, list[Grade]]:
    """Grade every submission in ``folder``: (lesson, grades sorted by student id). Every
    submission gets a scratch folder of its own, created here and bound into its sandbox alone."""
    submissions = find_submissions(folder)
    lesson = options.lesson or infer_lesson(list(submissions.values()))
    plan = [exercise.to_json() for exercise in lesson_exercises(lesson)]
    references = reference_solutions(lesson)
    with tempfile.TemporaryDirectory(prefix="grading-") as batch:
        Path(batch).chmod(0o711)  # the sandbox's user may pass through, not list
        with ThreadPoolExecutor(max_workers=options.jobs) as pool:
            futures = [
                pool.submit(
                    grade_one,
                    student,
                    notebook,
                    plan,
                    references,
                    Path(batch) / secrets.token_hex(8),
                    options,
                )
                for student, notebook in submissions.items()
            ]
            grades = [future.result() for future in futures]
    return f"{int(lesson):02d}", grades


def write_csv(path: Path, exercises: list[str], grades: list[Grade]) -> None:
    """One row per student: ``student``, 1/0 per exercise, ``total``, ``problems``."""
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["student", *exercises, "total", "problems"])
        for grade in grades:
            scores = [grade.scores[name] for name in exercises]
            writer.writerow([grade.student, *scores, grade.total, "; ".join(grade.problems)])


def write_feedback(folder: Path, lesson: str, grades: list[Grade], seed: int) -> None:
    """A Markdown file per student: each exercise's result and why, then what went wrong running
    the notebook."""
    folder.mkdir(parents=True, exist_ok=True)
    title = lesson_notebook(lesson).stem
    for grade in grades:
        lines = [
            f"# Feedback for {grade.student}: lesson {title}",
            "",
            f"Score: {grade.total} / {len(grade.scores)}",
            "",
        ]
        for name, score in grade.scores.items():
            lines.append(f"- {'✓' if score else '✗'} **{name}**: {grade.reasons[name]}")
        lines += ["", "## Running your notebook", ""]
        lines += [f"- {problem}" for problem in grade.problems] or [
            "- every cell ran without error"
        ]
        lines += [
            "",
            f"Graded by re-running your notebook in a fresh kernel; hidden tests used "
            f"seed {seed}. Printed ✓ lines in your notebook are not read.",
            "",
        ]
        (folder / f"{grade.student}.md").write_text("\n".join(lines), encoding="utf-8")


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring); a fresh random seed unless ``--seed``."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.grade", description="Grade a folder of submitted notebooks."
    )
    parser.add_argument(
        "submissions", type=Path, help="folder of STUDENT.ipynb (or STUDENT/x.ipynb)"
    )
    parser.add_argument("--out", type=Path, default=Path("grades.csv"), help="the grades CSV")
    parser.add_argument("--feedback", type=Path, help="feedback folder (default: <out>_feedback)")
    parser.add_argument("--lesson", help="lesson number, e.g. 05 (default: read from submissions)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="notebooks at once")
    parser.add_argument("--cell-timeout", type=int, default=300, help="seconds per cell")
    parser.add_argument("--notebook-timeout", type=int, default=1200, help="seconds per notebook")
    parser.add_argument(
        "--function-timeout",
        type=int,
        default=60,
        help="seconds a function answer may run, all calls of its exercise together",
    )
    parser.add_argument(
        "--memory", type=int, default=8, help="GiB of address space per sandboxed process"
    )
    parser.add_argument(
        "--library-answers",
        choices=LIBRARY_RULES,
        default="zero",
        help="an answer that is an imported function (the course's own implementation): "
        "zero = no mark (default), judge = judged like any answer; reported either way",
    )
    parser.add_argument("--seed", type=int, help="hidden tests' seed (default: a fresh random one)")
    options = parser.parse_args(argv)
    for name in ("jobs", "cell_timeout", "notebook_timeout", "function_timeout", "memory"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if options.seed is None:
        options.seed = secrets.randbelow(2**31)
    try:
        options.bwrap = require_bwrap()
    except SandboxUnavailable as error:
        parser.error(str(error))
    options.sandbox = True
    return options


def main(argv: list[str] | None = None) -> None:
    options = parse_options(argv)
    try:
        lesson, grades = grade_all(options.submissions, options)
    except ValueError as error:
        sys.exit(f"python -m tools.grade: error: {error}")
    exercises = list(grades[0].scores)
    write_csv(options.out, exercises, grades)
    feedback = options.feedback or options.out.with_name(f"{options.out.stem}_feedback")
    write_feedback(feedback, lesson, grades, options.seed)
    for grade in grades:
        print(
            f"{grade.student}: {grade.total}/{len(exercises)}"
            + (f"  ({'; '.join(grade.problems)})" if grade.problems else "")
        )
    print(f"lesson {lesson}, seed {options.seed}: {options.out}, feedback in {feedback}/")


if __name__ == "__main__":
    main()
