"""Grade a folder of submitted notebooks: ``python -m tools.grade SUBMISSIONS --out grades.csv``.

A submission is ``SUBMISSIONS_DIR/STUDENT.ipynb`` or ``SUBMISSIONS_DIR/STUDENT/<one notebook>``;
the file (or folder) name is the student id. All submissions are of one lesson (``--lesson NN``,
else read from their ``check("NN.…")`` calls). For each one, in ``--jobs`` parallel workers:

1. :mod:`tools.grading.execute` runs it top to bottom in a fresh kernel — a cell is interrupted
   after ``--cell-timeout`` seconds, the whole notebook killed after ``--notebook-timeout`` — and
   copies each exercise's answer out of the kernel right after the cell that checks it;
2. :mod:`tools.grading.judge` judges the answers in a fresh process with the course's own checkers
   and hidden inputs drawn from ``--seed`` (killed after ``--judge-timeout`` seconds).

Writes ``grades.csv`` (one row per student: 1/0 per exercise, the total, what went wrong while
running) and a feedback file per student (``--feedback``, default ``<out>_feedback/STUDENT.md``).
Nothing the notebook prints is read: a fake ✓ line earns nothing. See INSTRUCTORS.md, "Grading
submissions", for the walkthrough and the security model (a submission runs arbitrary code on
this machine: grade untrusted batches in a container, VM or as a throwaway user).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from course_lib.paths import REPO_ROOT
from tools.grading.lesson import infer_lesson, lesson_exercises, lesson_notebook

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


def _run(command: list[str], timeout: float) -> tuple[int | None, str]:
    """Run ``command`` from the repository root; kill it (and its kernel) after ``timeout`` s.
    Returns (exit status or None when killed, the end of its stderr)."""
    env = {**os.environ, "COURSE_OFFLINE": os.environ.get("COURSE_OFFLINE", "1")}
    env.setdefault("OMP_NUM_THREADS", "1")
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    try:
        _, stderr = process.communicate(timeout=timeout)
        return process.returncode, stderr[-2000:]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None, ""


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def grade_one(
    student: str,
    notebook: Path,
    lesson: str,
    plan_path: Path,
    workdir: Path,
    options: argparse.Namespace,
) -> Grade:
    """Run and judge one submission (see the module docstring)."""
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    workdir.mkdir(parents=True)
    grade = Grade(student, {e["name"]: 0 for e in plan}, {})
    status, stderr = _run(
        [
            sys.executable,
            "-m",
            "tools.grading.execute",
            str(notebook.resolve()),
            str(plan_path),
            str(workdir),
            "--cell-timeout",
            str(options.cell_timeout),
        ],
        options.notebook_timeout,
    )
    events = _events(workdir / "events.jsonl")
    if status is None:  # killed on timeout: its kernel, in a session of its own, goes too
        for pgid in (e["kernel_pgid"] for e in events if e.get("kernel_pgid")):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    for event in events:
        if "cell" in event:
            what = "ran past the cell timeout" if event["timeout"] else "raised"
            grade.problems.append(f"code cell {event['cell']} {what} ({event['error']})")
    capture_errors = {e["exercise"]: e["capture_error"] for e in events if "capture_error" in e}
    if status is None:
        grade.problems.append(f"notebook stopped after the {options.notebook_timeout} s limit")
    elif not any(e.get("done") for e in events):
        last = stderr.strip().splitlines()[-1:] or ["no message"]
        grade.problems.append(f"the notebook could not be run ({last[0]})")
    results = workdir / "results.jsonl"
    judged, _ = _run(
        [
            sys.executable,
            "-m",
            "tools.grading.judge",
            lesson,
            str(plan_path),
            str(workdir / "answers"),
            str(results),
            "--seed",
            str(options.seed),
        ],
        options.judge_timeout,
    )
    verdicts = {e["exercise"]: e for e in _events(results)}
    for exercise in plan:
        name = exercise["name"]
        verdict = verdicts.get(name)
        if verdict is None:
            why = (
                "not judged: your function ran past the time limit"
                if judged is None
                else f"not judged: the judging process stopped (exit status {judged})"
            )
            grade.reasons[name] = why
            continue
        grade.scores[name] = int(verdict["passed"])
        reason = verdict["reason"]
        if name in capture_errors and not verdict["passed"]:
            reason += f" (copying it out of your notebook failed: {capture_errors[name]})"
        grade.reasons[name] = reason
    return grade


def grade_all(folder: Path, options: argparse.Namespace) -> tuple[str, list[Grade]]:
    """Grade every submission in ``folder``: (lesson, grades sorted by student id)."""
    submissions = find_submissions(folder)
    lesson = options.lesson or infer_lesson(list(submissions.values()))
    plan = [exercise.to_json() for exercise in lesson_exercises(lesson)]
    with tempfile.TemporaryDirectory(prefix="grading-") as scratch:
        plan_path = Path(scratch) / "plan.json"
        plan_path.write_text(json.dumps(plan), encoding="utf-8")
        with ThreadPoolExecutor(max_workers=options.jobs) as pool:
            futures = [
                pool.submit(
                    grade_one,
                    student,
                    notebook,
                    lesson,
                    plan_path,
                    Path(scratch) / f"submission-{i}",
                    options,
                )
                for i, (student, notebook) in enumerate(submissions.items())
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


def main(argv: list[str] | None = None) -> None:
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
    parser.add_argument("--judge-timeout", type=int, default=300, help="seconds to judge one")
    parser.add_argument("--seed", type=int, help="hidden tests' seed (default: a fresh random one)")
    options = parser.parse_args(argv)
    for name in ("jobs", "cell_timeout", "notebook_timeout", "judge_timeout"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if options.seed is None:
        options.seed = secrets.randbelow(2**31)
    try:
        lesson, grades = grade_all(options.submissions, options)
    except ValueError as error:
        parser.error(str(error))
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
