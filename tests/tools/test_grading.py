"""The grader (``python -m tools.grade``) grades what a submission solved — nothing it printed,
faked or patched — and survives notebooks that crash or never end.

Seven submissions of lesson 01 (four exercises: ``reshape``, ``broadcast``, ``independent_copy``,
``gradient``) are made from the student edition with answers filled in here, graded in one batch
(two workers), and the grades CSV is compared value for value:

- correct: alternative correct answers (``view(3, -1)``, numpy broadcasting, ``torch.tensor(t)``);
- wrong: one wrong value, and an ``independent_copy`` that fits only the checker's own input (the
  course check passes it; the hidden inputs do not);
- blank: the student edition as is;
- spoofing: redefines ``check``, prints ✓ lines, monkeypatches ``course_lib.exercises`` in its
  kernel and answers with an object equal to everything — it solved ``reshape`` only;
- crashing: its ``gradient`` cell raises before assigning the answer;
- looping: a ``while True`` cell, interrupted by the cell timeout, the rest still graded;
- endless: a loop that swallows interrupts, killed by the notebook timeout — the answer copied
  before the loop still counts.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cloudpickle
import nbformat
import pytest
import torch

from course_lib.paths import REPO_ROOT
from tools.grade import find_submissions, main
from tools.grading.hidden import HIDDEN
from tools.grading.judge import judge, plain
from tools.grading.lesson import (
    infer_lesson,
    lesson_exercises,
    lesson_notebook,
    reference_solutions,
)
from tools.student_edition import make_student_notebook

EXERCISES = ["01.reshape", "01.broadcast", "01.independent_copy", "01.gradient"]
CELL_TIMEOUT, NOTEBOOK_TIMEOUT = 30, 100

RESHAPE = "answer = torch.arange(12).view(3, -1)\ncheck('01.reshape', answer)"
BROADCAST = "answer = torch.as_tensor(np.arange(1, 6)[:, None] * np.arange(1, 6))\n" + (
    "check('01.broadcast', answer)"
)
COPY = "def independent_copy(t):\n    return torch.tensor(t.tolist(), dtype=t.dtype)\n\n" + (
    "check('01.independent_copy', independent_copy)"
)
GRADIENT = (
    "x = torch.tensor(2.0, requires_grad=True)\ny = x**3 + 2 * x\ny.backward()\nanswer = x.grad\n"
    "check('01.gradient', answer)"
)
SPOOF = """
import course_lib.exercises as exercises
import course_lib.exercises._registry as registry

def check(name, answer):
    print(f"✓ {name}: correct!")
    return True

exercises.check = registry.check = check
registry.expect_equal = registry.expect_close = lambda *args, **kwargs: None
for name, ex in list(registry._EXERCISES.items()):
    registry._EXERCISES[name] = type(ex)(name, lambda answer: None, ex.hint, ex.nudge, ex.task)

class Anything:
    def __eq__(self, other):
        return True
print("✓ 01.reshape: correct!\\n✓ 01.broadcast: correct!")
"""


def _submission(
    changes: dict[str, str], *, after: dict[str, str] | None = None
) -> nbformat.NotebookNode:
    """Lesson 01's student edition (its text, imports and exercises) with the cells of
    ``changes`` (exercise → new source) replaced and a cell inserted after the cell of each
    exercise in ``after`` (after "imports": the first code cell that imports torch)."""
    notebook = make_student_notebook(nbformat.read(lesson_notebook("01"), as_version=4))
    ids = {exercise.name: exercise.cell_id for exercise in lesson_exercises("01")}
    # Only the lesson's imports and its exercise cells (nothing else feeds them): a quick run.
    notebook.cells = [
        cell
        for cell in notebook.cells
        if cell.cell_type == "markdown"
        or "import torch" in cell.source
        or cell.get("id") in ids.values()
    ]
    for cell in notebook.cells:
        for name, source in changes.items():
            if cell.get("id") == ids[name]:
                cell.source = source
    for name, source in (after or {}).items():
        index = next(
            i
            for i, cell in enumerate(notebook.cells)
            if (name == "imports" and "import torch" in cell.source)
            or cell.get("id") == ids.get(name)
        )
        notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
    return notebook


SOLVED = {
    "01.reshape": RESHAPE,
    "01.broadcast": BROADCAST,
    "01.independent_copy": COPY,
    "01.gradient": GRADIENT,
}
SUBMISSIONS = {
    "correct": _submission(SOLVED),
    "wrong": _submission(
        {
            **SOLVED,
            "01.reshape": "answer = torch.arange(12).reshape(4, 3)\ncheck('01.reshape', answer)",
            "01.independent_copy": "def independent_copy(t):\n    return torch.arange(6.0)\n\n"
            "check('01.independent_copy', independent_copy)",
        }
    ),
    "blank": _submission({}),
    "spoofing": _submission(
        {
            "01.reshape": RESHAPE,
            "01.broadcast": "answer = Anything()\ncheck('01.broadcast', answer)",
            "01.independent_copy": "def independent_copy(t):\n    return Anything()\n\n"
            "check('01.independent_copy', independent_copy)",
        },
        after={"imports": SPOOF},
    ),
    "crashing": _submission(
        {**SOLVED, "01.gradient": "answer = 1 / 0\ncheck('01.gradient', answer)"}
    ),
    "looping": _submission(SOLVED, after={"01.broadcast": "while True:\n    pass"}),
    "endless": _submission(
        SOLVED,
        after={
            "01.reshape": "import os, time\n"
            "open(os.environ['ENDLESS_KERNEL_PID_FILE'], 'w').write(str(os.getpid()))\n"
            "while True:\n    try:\n        time.sleep(0.2)\n"
            "    except KeyboardInterrupt:\n        pass"
        },
    ),
}
EXPECTED = {
    "blank": ["0", "0", "0", "0", "0"],
    "correct": ["1", "1", "1", "1", "4"],
    "crashing": ["1", "1", "1", "0", "3"],
    "endless": ["1", "0", "0", "0", "1"],
    "looping": ["1", "1", "1", "1", "4"],
    "spoofing": ["1", "0", "0", "0", "1"],
    "wrong": ["0", "1", "0", "1", "2"],
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("grading")
    submissions = folder / "submissions"
    submissions.mkdir()
    for student, notebook in SUBMISSIONS.items():
        if student == "correct":  # the other layout: a folder per student
            (submissions / student).mkdir()
            nbformat.write(notebook, submissions / student / "01_tensors.ipynb")
        else:
            nbformat.write(notebook, submissions / f"{student}.ipynb")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COURSE_OFFLINE", "1")
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setenv("ENDLESS_KERNEL_PID_FILE", str(folder / "endless.pid"))
        main(
            [
                str(submissions),
                "--out",
                str(folder / "grades.csv"),
                "--jobs",
                "2",
                "--seed",
                "7",
                "--cell-timeout",
                str(CELL_TIMEOUT),
                "--notebook-timeout",
                str(NOTEBOOK_TIMEOUT),
            ]
        )
    return folder


def _rows(graded: Path) -> list[list[str]]:
    with (graded / "grades.csv").open(encoding="utf-8") as file:
        return list(csv.reader(file))


def test_grades_csv_holds_exactly_what_each_submission_solved(graded: Path) -> None:
    header, *rows = _rows(graded)
    assert header == ["student", *EXERCISES, "total", "problems"]
    assert {row[0]: row[1:-1] for row in rows} == EXPECTED
    assert [row[0] for row in rows] == sorted(EXPECTED)


def test_crashes_and_endless_loops_are_recorded_and_the_batch_goes_on(graded: Path) -> None:
    problems = {row[0]: row[-1] for row in _rows(graded)[1:]}
    assert problems["correct"] == problems["blank"] == problems["wrong"] == ""
    assert "raised (ZeroDivisionError: division by zero)" in problems["crashing"]
    assert "ran past the cell timeout" in problems["looping"]
    assert problems["endless"].endswith(f"notebook stopped after the {NOTEBOOK_TIMEOUT} s limit")
    # The endless notebook's kernel (in a session of its own) was killed, not left spinning.
    kernel = int((graded / "endless.pid").read_text())
    assert not _running(kernel)


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_feedback_says_what_passed_what_failed_and_why(graded: Path) -> None:
    feedback = graded / "grades_feedback"
    assert sorted(p.stem for p in feedback.glob("*.md")) == sorted(EXPECTED)
    wrong = (feedback / "wrong.md").read_text(encoding="utf-8")
    assert "Score: 2 / 4" in wrong
    assert "✗ **01.reshape**: your 3×4 tensor of 0…11 has shape (4, 3), expected (3, 4)" in wrong
    assert "✗ **01.independent_copy**: hidden test: independent_copy of the" in wrong
    assert "seed 7" in wrong
    blank = (feedback / "blank.md").read_text(encoding="utf-8")
    assert "✗ **01.reshape**: not answered (`...`)" in blank
    assert "✗ **01.independent_copy**: not implemented" in blank
    spoof = (feedback / "spoofing.md").read_text(encoding="utf-8")
    assert "✗ **01.broadcast**: `answer` is a Anything, not a number, tensor or array" in spoof
    assert "✗ **01.independent_copy**: independent_copy(...) returned a Anything" in spoof
    crashing = (feedback / "crashing.md").read_text(encoding="utf-8")
    assert "✗ **01.gradient**: dy/dx of x**3 + 2*x at x = 2 has shape (5, 5)" in crashing


def test_submissions_are_found_in_both_layouts_and_bad_folders_refused(tmp_path: Path) -> None:
    (tmp_path / "ana.ipynb").write_text("{}")
    (tmp_path / "ben").mkdir()
    (tmp_path / "ben" / "lesson.ipynb").write_text("{}")
    (tmp_path / "notes.txt").write_text("not a submission")
    assert find_submissions(tmp_path) == {
        "ana": tmp_path / "ana.ipynb",
        "ben": tmp_path / "ben" / "lesson.ipynb",
    }
    (tmp_path / "ben" / "second.ipynb").write_text("{}")
    with pytest.raises(ValueError, match="should hold one notebook, it holds 2"):
        find_submissions(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .ipynb submissions"):
        find_submissions(tmp_path / "empty")


def test_the_lesson_is_read_from_the_submissions_or_must_be_given(tmp_path: Path) -> None:
    one, other = tmp_path / "a.ipynb", tmp_path / "b.ipynb"
    one.write_text('check("05.debias", debias)')
    other.write_text('check("05.rr_epsilon", rr_epsilon)')
    assert infer_lesson([one, other]) == "05"
    other.write_text('check("06.laplace_scale", laplace_scale)')
    with pytest.raises(ValueError, match="pass --lesson NN"):
        infer_lesson([one, other])


def _judge_function(function, exercise: str, tmp_path: Path) -> tuple[bool, str]:
    """Judge ``function`` as the answer to a function ``exercise``, as the judge process does."""
    from course_lib.exercises._registry import _lookup

    spec = next(e for e in lesson_exercises(exercise[:2]) if e.name == exercise).to_json()
    (tmp_path / f"{exercise}.pkl").write_bytes(cloudpickle.dumps(function))
    reference = reference_solutions(exercise[:2]).get(exercise)
    generator = torch.Generator().manual_seed(0)
    return judge(spec, tmp_path, _lookup(exercise).checker, reference, generator)


def test_an_answer_equal_to_everything_earns_nothing(tmp_path: Path) -> None:
    """On a checker that compares plain numbers (``==``), an object whose ``==`` always says yes
    would pass; the judge refuses any result that is not plain data."""

    class Anything:
        def __eq__(self, other: object) -> bool:
            return True

    passed, reason = _judge_function(
        lambda records, key, value: Anything(), "00.count_where", tmp_path
    )
    assert (passed, reason) == (
        False,
        "count_where(...) returned a Anything; answers must be "
        "numbers, tensors, arrays or lists of them",
    )
    assert not plain(Anything()) and not plain([1, Anything()])
    assert plain([1, 2.5, "x", torch.zeros(2), {"a": (True, None)}])


def test_hidden_inputs_catch_a_function_fitted_to_the_checker(tmp_path: Path) -> None:
    """``count_where`` answering the checker's three questions from a table passes the course
    check, never the hidden tests; the instructor's own solution passes both."""
    table = {("diabetes", True): 3, ("age", 51): 1}

    def fitted(records, key, value):
        return table.get((key, value), 0) if records else 0

    passed, reason = _judge_function(fitted, "00.count_where", tmp_path)
    assert not passed and reason.startswith("hidden test: count_where on [")
    reference = reference_solutions("00")["00.count_where"]
    assert _judge_function(reference, "00.count_where", tmp_path) == (
        True,
        "correct (course check and hidden tests)",
    )


def test_a_training_loop_fitted_to_the_checkers_epochs_fails_the_hidden_test(
    tmp_path: Path,
) -> None:
    """A loop that always trains the checker's 5 epochs passes the course check; the hidden case
    asks for other epoch counts on other data and catches it."""

    reference = reference_solutions("02")["02.train_loop"]

    def five_epochs(model, loader, optimizer, epochs):
        return reference(model, loader, optimizer, 5)

    passed, reason = _judge_function(five_epochs, "02.train_loop", tmp_path)
    assert not passed and reason.startswith("hidden test: the weights after training_loop on ")


@pytest.mark.parametrize("exercise", sorted(HIDDEN))
def test_every_hidden_case_passes_the_instructors_solution(exercise: str, tmp_path: Path) -> None:
    reference = reference_solutions(exercise[:2])[exercise]
    assert _judge_function(reference, exercise, tmp_path) == (
        True,
        "correct (course check and hidden tests)",
    )


def test_a_missing_answer_is_named(tmp_path: Path) -> None:
    spec = lesson_exercises("01")[0].to_json()
    from course_lib.exercises._registry import _lookup

    result = judge(spec, tmp_path, _lookup(spec["name"]).checker, None, torch.Generator())
    assert result == (False, "no answer: `answer` was not defined when its check cell ran")
    (tmp_path / "01.reshape.pkl").write_bytes(pickle.dumps(Ellipsis))
    assert judge(spec, tmp_path, _lookup(spec["name"]).checker, None, torch.Generator()) == (
        False,
        "not answered (`...`)",
    )


TAMPERING = """
def count_where(records, key, value):
    import sys
    no_check = lambda *args, **kwargs: None
    for module in ("course_lib.exercises.foundations", "tools.grading.hidden"):
        sys.modules[module].expect_equal = sys.modules[module].expect_close = no_check
    return 3  # right for the checker's first question; the patched helpers wave the rest through
"""


def test_an_answer_that_patches_the_checkers_while_judged_earns_nothing(tmp_path: Path) -> None:
    """The learner's function runs in the judging process; one that replaces the checkers'
    helpers when called would pass every later comparison. The judge sees its own code changed,
    gives no mark, and judges nothing after it."""
    namespace = {"__name__": "__main__"}  # so cloudpickle copies the function by value
    exec(TAMPERING, namespace)
    answers = tmp_path / "answers"
    answers.mkdir()
    (answers / "00.count_where.pkl").write_bytes(cloudpickle.dumps(namespace["count_where"]))
    (answers / "00.mean_age.pkl").write_bytes(
        cloudpickle.dumps(reference_solutions("00")["00.mean_age"])
    )
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([e.to_json() for e in lesson_exercises("00")]))
    results = tmp_path / "results.jsonl"
    command = [sys.executable, "-m", "tools.grading.judge", "00", str(plan), str(answers)]
    subprocess.run([*command, str(results), "--seed", "3"], cwd=REPO_ROOT, check=True)
    verdicts = [json.loads(line) for line in results.read_text().splitlines()]
    assert verdicts == [
        {
            "exercise": "00.count_where",
            "passed": False,
            "reason": "your answer changed the grader's code (course_lib.exercises.foundations."
            "expect_close, course_lib.exercises.foundations.expect_equal, tools.grading.hidden."
            "expect_close): no marks",
        },
        {
            "exercise": "00.mean_age",
            "passed": False,
            "reason": "not judged: an earlier answer changed the grader's code",
        },
    ]
