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
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import nbformat
import pytest
import torch

from course_lib.paths import REPO_ROOT
from tools.grade import _events, find_submissions, main
from tools.grading import codec
from tools.grading.hidden import HIDDEN
from tools.grading.judge import (
    MAX_RECORD_BYTES,
    Callee,
    Verdict,
    _record,
    imported_function,
    judge_all,
)
from tools.grading.lesson import (
    infer_lesson,
    lesson_exercises,
    lesson_notebook,
    reference_solutions,
)
from tools.grading.sandbox import (
    Sandbox,
    UnsafeFile,
    read_scratch_file,
)
from tools.student_edition import make_student_notebook

needs_sandbox = pytest.mark.usefixtures("sandbox_available")
MARKER = "grading-endless-5c1d"  # in the command line of the endless notebook's child process

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
            "01.reshape": "import subprocess, time\n"
            f"subprocess.Popen(['sh', '-c', 'sleep 600 # {MARKER}'])\n"
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
def graded(tmp_path_factory: pytest.TempPathFactory, sandbox_available: None) -> Path:
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
    # The endless notebook and the process it started were killed with their sandbox.
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if _holds(p, MARKER)]
    assert left == []


def _holds(path: Path, text: str) -> bool:
    try:
        return text.encode() in path.read_bytes()
    except OSError:  # the process ended while we looked
        return False


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


def _notebook(path: Path, *sources: str) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell('check("06.x") in prose does not count')]
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(notebook, path)
    return path


def test_the_lesson_is_read_from_the_submissions_or_must_be_given(tmp_path: Path) -> None:
    """Double quotes, as the lessons write ``check``, and single quotes both count (the JSON file
    escapes double quotes: the code cells are read, not the file's text)."""
    one = _notebook(tmp_path / "a.ipynb", 'check("05.debias", debias)')
    other = _notebook(tmp_path / "b.ipynb", "check( '05.rr_epsilon', rr_epsilon)")
    assert infer_lesson([one, other]) == "05"
    _notebook(other, 'check("06.laplace_scale", laplace_scale)')
    with pytest.raises(ValueError, match="lessons checked: 05, 06.*pass --lesson NN"):
        infer_lesson([one, other])
    (tmp_path / "c.ipynb").write_text("not json")
    with pytest.raises(ValueError, match="c.ipynb is not a Jupyter notebook"):
        infer_lesson([tmp_path / "c.ipynb"])


def _judge(
    lesson: str,
    answers: dict[str, Any],
    tmp_path: Path,
    tamper: Callable[[Path], None] | None = None,
    **options: Any,
) -> dict[str, Verdict]:
    """Judge ``answers`` (exercise → function or value) of ``lesson`` as ``tools.grade`` does:
    the records the notebook runner would leave (then ``tamper(answers folder)``, as a submission
    could), a sandboxed callee for the functions."""
    plan = [e.to_json() for e in lesson_exercises(lesson) if e.name in answers]
    sandbox = Sandbox(tmp_path / "scratch")
    sandbox.prepare()
    folder = tmp_path / "scratch" / "answers"
    folder.mkdir()
    for exercise in plan:
        answer = answers[exercise["name"]]
        if exercise["function"] and callable(answer):
            (folder / f"{exercise['name']}.pkl").write_bytes(cloudpickle.dumps(answer))
            record: dict[str, Any] = {"function": True}
        else:
            record = {"value": codec.encode(answer)}
        (folder / f"{exercise['name']}.json").write_text(json.dumps(record))
    os.system(f"chmod -R a+rX {tmp_path / 'scratch'}")  # readable by the sandbox's user
    if tamper is not None:
        tamper(folder)
    serve = sandbox.wrap([sys.executable, "-m", "tools.grading.execute", "serve"])
    callee = Callee(sandbox, serve, serve)
    options = {"seed": 0, "function_timeout": 60, **options}
    return dict(judge_all(plan, reference_solutions(lesson), callee, **options))


@needs_sandbox
def test_function_answers_are_judged_by_calling_them_in_the_sandbox(tmp_path: Path) -> None:
    """Lesson 00 and 01 in one callee: an object whose ``==`` always says yes earns nothing, a
    function fitted to the checker's own questions fails the hidden inputs, the instructor's
    solutions pass both, and a copy that shares memory with its input is caught across the
    wall (the judge gets a view of its own tensor back)."""

    class Anything:
        def __eq__(self, other: object) -> bool:
            return True

    table = {("diabetes", True): 3, ("age", 51): 1}

    def fitted(records, key, value):
        return table.get((key, value), 0) if records else 0

    verdicts = _judge(
        "00",
        {"00.count_where": lambda records, key, value: Anything(), "00.mean_age": fitted},
        tmp_path,
    )
    assert verdicts["00.count_where"] == Verdict(
        False,
        "count_where(...) returned a Anything; answers must be numbers, tensors, arrays or "
        "lists of them — nudge: " + _nudge("00.count_where"),
        nudge=True,
    )
    reference = reference_solutions("00")
    verdicts = _judge(
        "00", {"00.count_where": fitted, "00.mean_age": reference["00.mean_age"]}, tmp_path / "b"
    )
    assert verdicts["00.count_where"].reason.startswith("hidden test: count_where on [")
    assert verdicts["00.mean_age"] == Verdict(True, "correct (course check and hidden tests)")
    shared = _judge(
        "01", {"01.independent_copy": lambda t: t.view(-1).view(t.shape)}, tmp_path / "c"
    )
    assert shared["01.independent_copy"].reason.startswith(
        "after copy = independent_copy(t) with t = torch.arange(6.0), setting copy[0] = 100 "
        "changed t[0] too: they share memory"
    )


def _nudge(name: str) -> str:
    from course_lib.exercises._registry import _lookup

    return _lookup(name).nudge


@needs_sandbox
def test_a_training_loop_fitted_to_the_checkers_epochs_fails_the_hidden_test(
    tmp_path: Path,
) -> None:
    """A loop that always trains the checker's 5 epochs passes the course check (the model it
    trains in the sandbox comes back as the judge's own model, changed in place); the hidden
    case asks for other epoch counts on other data and catches it."""
    reference = reference_solutions("02")["02.train_loop"]

    def five_epochs(model, loader, optimizer, epochs):
        return reference(model, loader, optimizer, 5)

    verdict = _judge("02", {"02.train_loop": five_epochs}, tmp_path)["02.train_loop"]
    assert not verdict.passed
    assert verdict.reason.startswith("hidden test: the weights after training_loop on ")


#: Every function exercise of the course, by lesson (the answer is a ``def`` in the instructor's
#: notebook).
FUNCTIONS = {
    lesson: [e.name for e in lesson_exercises(lesson) if e.function]
    for lesson in sorted(path.name[:2] for path in REPO_ROOT.glob("notebooks/[0-9][0-9]_*.ipynb"))
}


def test_every_one_of_the_66_function_exercises_has_hidden_cases() -> None:
    every = {name for names in FUNCTIONS.values() for name in names}
    assert len(every) == 66  # 57 in lessons 00–21, 3 each in lessons 22, 23, 24
    assert set(HIDDEN) == every


@needs_sandbox
@pytest.mark.parametrize("lesson", sorted(lesson for lesson, names in FUNCTIONS.items() if names))
def test_the_instructors_solutions_pass_across_the_wall(lesson: str, tmp_path: Path) -> None:
    """Every function exercise, its answer called in the sandbox: the instructor's solution
    passes the course check (SharedTensor results and the session log they wrote included) and,
    where there are some, the hidden cases."""
    references = reference_solutions(lesson)
    verdicts = _judge(lesson, {name: references[name] for name in FUNCTIONS[lesson]}, tmp_path)
    assert verdicts == {
        name: Verdict(
            True, "correct (course check and hidden tests)" if name in HIDDEN else "correct"
        )
        for name in FUNCTIONS[lesson]
    }


def test_an_alias_of_a_library_function_is_seen_without_unpickling_it() -> None:
    from course_lib.dp.mechanisms import randomized_response_epsilon

    def wrapper(p):
        return randomized_response_epsilon(p)

    alias = imported_function(cloudpickle.dumps(randomized_response_epsilon))
    assert alias == "course_lib.dp.mechanisms.randomized_response_epsilon"
    assert imported_function(cloudpickle.dumps(wrapper)) is None
    assert imported_function(b"not a pickle") is None


def test_plain_data_crosses_the_wall_and_nothing_else_does() -> None:
    class Anything:
        def __eq__(self, other: object) -> bool:
            return True

    value = [1, 2.5, "x", torch.arange(6).view(2, 3).T, {"a": (True, None)}, float("nan"), 2**70]
    back = codec.decode(json.loads(json.dumps(codec.encode(value))))
    assert back[:3] == [1, 2.5, "x"] and back[4] == {"a": (True, None)} and back[6] == 2**70
    assert torch.equal(back[3], torch.arange(6).view(2, 3).T)
    for bad in (Anything(), [1, Anything()], lambda: 1, torch.nn.Linear(1, 1)):
        with pytest.raises(codec.NotPlainData):
            codec.encode(bad)
    for forged in ({"tensor": "int64", "shape": [2], "data": "AAAA"}, {"object": "os.system"}):
        with pytest.raises(ValueError, match="malformed answer data"):
            codec.decode(forged)


def test_course_objects_cross_as_their_attributes_and_only_allowed_classes_are_made() -> None:
    """A secret-shared result comes back as a SharedTensor of the judge's own session, whose
    communication log holds what the call opened; a reply that asks for an object of any other
    course class is refused before anything is made."""
    import pickle

    from course_lib.randomness import InsecureSeededRandom
    from course_lib.smpc.session import Session

    session = Session(2, rng=InsecureSeededRandom(0))
    x = session.share(torch.tensor([1.0, -2.0, 3.0]))
    session.log.reset()
    judge_side = codec.Objects([x])
    (copy,) = pickle.loads(pickle.dumps((x,)))  # what the sandbox gets
    sandbox_side = codec.Objects([copy])
    result = codec.encode(copy * (1 - copy.ltz()), [], objects=sandbox_side)
    wire = json.loads(json.dumps([result, sandbox_side.encode_all([])]))
    judge_side.apply(wire[1], [])
    back = codec.decode(wire[0], [], objects=judge_side)
    assert back.session is session
    assert torch.equal(back.reveal(), torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64))
    assert sorted(session.log.by_operation) == ["compare", "mul", "reveal"]
    fresh = codec.Objects([x])
    forged = [[fresh.before + 1, {"class": "course_lib.fl.deployment:Job", "state": []}]]
    with pytest.raises(ValueError, match="object numbers"):
        fresh.apply(forged)
    forged[0][0] = fresh.before
    with pytest.raises(ValueError, match="an object of class 'course_lib.fl.deployment:Job'"):
        fresh.apply(forged)
    assert len(fresh.items) == fresh.before  # nothing was made
    with pytest.raises(codec.NotPlainData):
        codec.encode(x)  # a value answer never carries objects


def _tampering() -> list[tuple[Callable[[Any], Any], str]]:
    """Learner functions for 17.secure_relu that hide what they did from the log, and what the
    judge says of each; made here (not at module level) so cloudpickle sends them by value."""

    def _peek_then_reset_share_reads(x: Any) -> Any:
        x.shares.sum(0)  # the peek the audit counts ...
        out = x * (1 - x.ltz())
        x.session.log.share_reads = 0  # ... hidden again
        return out

    def _reveal_then_reset_the_log(x: Any) -> Any:
        x.reveal()
        out = x * (1 - x.ltz())
        x.session.log.reset()
        return out

    def _clear_the_openings(x: Any) -> Any:
        out = x * (1 - x.ltz())
        x.session.log.openings.clear()
        return out

    def _swap_in_a_fresh_log(x: Any) -> Any:
        from course_lib.smpc.communication import CommunicationLog

        x.session.log = CommunicationLog(x.session.n_parties)
        x.shares.sum(0)
        return x * (1 - x.ltz())

    return [
        (_peek_then_reset_share_reads, "it lowered the log's count of share reads"),
        (_reveal_then_reset_the_log, "it lowered the communication log's total cost"),
        (_clear_the_openings, "it removed entries from the log's openings"),
        (
            _swap_in_a_fresh_log,
            "it made an object of class 'course_lib.smpc.communication:CommunicationLog', which "
            "no reply may make",
        ),
    ]


TAMPERING = _tampering()


@pytest.mark.parametrize(("attack", "reason"), TAMPERING, ids=[a.__name__ for a, _ in TAMPERING])
def test_a_reply_that_shrinks_or_replaces_the_log_is_refused_and_changes_nothing(
    attack: Callable[[Any], Any], reason: str
) -> None:
    """Across the wall the judge's communication log only grows: a reply whose log lost counts or
    entries it held before the call, or whose session holds another log, is
    :class:`codec.Tampered` and leaves every judge object as it was; the honest call's reply is
    applied."""
    import pickle

    from course_lib.randomness import InsecureSeededRandom
    from course_lib.smpc.session import Session

    session = Session(2, rng=InsecureSeededRandom(0))
    x = session.share(torch.tensor([1.0, -2.0, 3.0]))
    x.shares.sum(0), x * x  # the log already holds a share read, an input and openings
    log = session.log
    assert log.share_reads == 1 and log.inputs and log.openings
    before = (log.total, dict(log.by_operation), log.share_reads, list(log.openings))
    judge_side = codec.Objects([x])
    (copy,) = pickle.loads(pickle.dumps((x,)))
    sandbox_side = codec.Objects([copy])
    result = codec.encode(attack(copy), [], objects=sandbox_side)
    wire = json.loads(json.dumps([result, sandbox_side.encode_all([])]))
    with pytest.raises(codec.Tampered, match=reason):
        judge_side.apply(wire[1], [])
    assert session.log is log
    assert (log.total, log.by_operation, log.share_reads, log.openings) == before

    honest = codec.Objects([x])
    (copy,) = pickle.loads(pickle.dumps((x,)))
    sandbox_side = codec.Objects([copy])
    codec.encode(copy * (1 - copy.ltz()), [], objects=sandbox_side)
    honest.apply(json.loads(json.dumps(sandbox_side.encode_all([]))), [])
    assert session.log is log and log.share_reads == 1 and len(log.openings) > len(before[3])


@needs_sandbox
def test_a_secure_function_that_hides_its_peek_from_the_log_fails_with_the_reason(
    tmp_path: Path,
) -> None:
    """17.secure_relu that reads the shares (or reveals) and then resets, clears or replaces the
    session's log inside the sandbox — where the checker had just reset it: refused as tampering
    (the judge pads every log it sends), with the reason in the feedback; the honest protocol
    passes across the same wall."""

    def honest(x):
        return x * (1 - x.ltz())

    answers = [honest, *(attack for attack, _ in TAMPERING)]
    verdicts = [
        _judge("17", {"17.secure_relu": f}, tmp_path / str(i))["17.secure_relu"]
        for i, f in enumerate(answers)
    ]
    assert verdicts[0].passed, verdicts[0].reason
    for verdict, (_, reason) in zip(verdicts[1:], TAMPERING, strict=True):
        assert not verdict.passed
        assert verdict.reason.startswith(
            f"secure_relu(...) tampered with the grader's objects: {reason}; an honest protocol "
            "run only adds to the session's communication log, so this answer is refused"
        ), verdict.reason


def test_scratch_files_are_read_only_as_small_regular_files_never_through_links(
    tmp_path: Path,
) -> None:
    """Every judge-side read of a file the sandbox wrote: a symbolic link (to /dev/zero, or a
    linked folder on the way), a FIFO and a file over the cap are refused with the reason, at
    once (nothing hangs, nothing large is read); a missing file is None."""
    answers = tmp_path / "answers"
    answers.mkdir()
    (answers / "ok.json").write_text('{"value": 1}')
    (answers / "zero.json").symlink_to("/dev/zero")
    os.mkfifo(answers / "pipe.json")
    with (answers / "big.json").open("wb") as file:
        file.truncate(MAX_RECORD_BYTES + 1)  # sparse: no disk used
    (tmp_path / "linked").symlink_to(answers)
    assert read_scratch_file(tmp_path, "answers/ok.json", 100) == b'{"value": 1}'
    assert read_scratch_file(tmp_path, "answers/none.json", 100) is None
    with pytest.raises(UnsafeFile, match="answers/zero.json is a symbolic link"):
        read_scratch_file(tmp_path, "answers/zero.json", 100)
    with pytest.raises(UnsafeFile, match="answers/pipe.json is not a regular file"):
        read_scratch_file(tmp_path, "answers/pipe.json", 100)
    with pytest.raises(UnsafeFile, match="linked is not a folder"):
        read_scratch_file(tmp_path, "linked/ok.json", 100)
    with pytest.raises(UnsafeFile, match="larger than the grader reads"):
        read_scratch_file(tmp_path, "answers/ok.json", 5)
    with pytest.raises(ValueError, match="below the scratch"):
        read_scratch_file(tmp_path, "answers/../ok.json", 100)
    assert _record(tmp_path, "ok") == {"value": 1}
    assert _record(tmp_path, "none") is None
    assert _record(tmp_path, "zero") == {
        "unreadable": "answers/zero.json is a symbolic link or cannot be opened"
    }
    assert _record(tmp_path, "pipe") == {"unreadable": "answers/pipe.json is not a regular file"}
    assert _record(tmp_path, "big") == {
        "unreadable": f"answers/big.json is larger than the grader reads ({MAX_RECORD_BYTES:,} "
        "bytes)"
    }
    (tmp_path / "events.jsonl").symlink_to("/dev/zero")
    assert _events(tmp_path / "events.jsonl") == []
    (tmp_path / "events.jsonl").unlink()
    os.mkfifo(tmp_path / "events.jsonl")
    assert _events(tmp_path / "events.jsonl") == []


@needs_sandbox
def test_answer_files_that_are_links_fifos_or_too_large_fail_only_their_exercise(
    tmp_path: Path,
) -> None:
    """A submission that leaves answers/NAME.pkl as a link to /dev/zero, a FIFO or a file over
    the cap: each of those exercises fails with the reason, the judge neither hangs nor runs out
    of memory, and the next exercise is judged as usual."""
    import math

    def coin_flip_response(truth, first_coin, second_coin):
        return torch.where(first_coin, truth, second_coin)

    def rr_epsilon(p_truth):
        return math.log((p_truth + (1 - p_truth) / 2) / ((1 - p_truth) / 2))

    def debias(noisy_answers, p_truth):
        return (noisy_answers.double().mean().item() - (1 - p_truth) / 2) / p_truth

    def group_epsilon(p_truth, k):
        return k * math.log((1 + p_truth) / (1 - p_truth))

    def tamper(folder: Path) -> None:
        (folder / "05.coin_flip.pkl").unlink()
        (folder / "05.coin_flip.pkl").symlink_to("/dev/zero")
        (folder / "05.rr_epsilon.pkl").unlink()
        os.mkfifo(folder / "05.rr_epsilon.pkl")
        with (folder / "05.debias.pkl").open("ab") as file:
            file.truncate(MAX_RECORD_BYTES + 1)

    answers = {
        "05.coin_flip": coin_flip_response,
        "05.rr_epsilon": rr_epsilon,
        "05.debias": debias,
        "05.group_privacy": group_epsilon,
    }
    verdicts = _judge("05", answers, tmp_path, tamper=tamper)
    assert {name: (v.passed, v.reason) for name, v in verdicts.items()} == {
        "05.coin_flip": (
            False,
            "your answer could not be read (answers/05.coin_flip.pkl is a symbolic link or "
            "cannot be opened)",
        ),
        "05.rr_epsilon": (
            False,
            "your answer could not be read (answers/05.rr_epsilon.pkl is not a regular file)",
        ),
        "05.debias": (
            False,
            "your answer could not be read (answers/05.debias.pkl is larger than the grader "
            f"reads ({MAX_RECORD_BYTES:,} bytes))",
        ),
        "05.group_privacy": (True, "correct (course check and hidden tests)"),
    }


@needs_sandbox
def test_the_sandbox_has_no_network_no_solutions_no_other_processes_and_no_privileges(
    tmp_path: Path,
) -> None:
    """What a sandboxed command sees: its scratch, no solutions or grader, no network, only its
    own processes, and (when the grader is root) the unprivileged user nobody."""

    sandbox = Sandbox(tmp_path / "scratch")
    sandbox.prepare()
    probe = f"""
import os, socket
from pathlib import Path
root = Path({str(REPO_ROOT)!r})
print("notebooks", (root / "notebooks").exists())
print("judge", (root / "tools" / "grading" / "judge.py").exists())
print("hidden", (root / "tools" / "grading" / "hidden.py").exists())
print("course_lib", (root / "course_lib" / "__init__.py").exists())
print("home", sorted(os.listdir("/root")) if Path("/root").exists() else [])
print("interfaces", ",".join(name for _, name in socket.if_nameindex()))
print("processes", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
print("uid", os.getuid())
Path("mine.txt").write_text("ok")
"""
    command = sandbox.wrap([sys.executable, "-c", probe])
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert result.returncode == 0, result.stderr
    assert lines["notebooks"] == lines["judge"] == lines["hidden"] == "False"
    assert lines["course_lib"] == "True"
    # /root holds at most the folder of the Python installation (bound read-only), nothing else
    python = Path(sys.base_prefix).resolve()
    allowed = [python.parts[2]] if python.is_relative_to("/root") else []
    assert json.loads(lines["home"].replace("'", '"')) in ([], allowed)
    assert lines["interfaces"] == "lo"  # a network namespace of its own: no way out
    assert [name for _, name in socket.if_nameindex()] != ["lo"]  # the grader's has more
    assert len(json.loads(lines["processes"])) <= 4  # bwrap's init, setpriv/prlimit, python
    if os.geteuid() == 0:
        assert lines["uid"] == "65534"
    assert (tmp_path / "scratch" / "mine.txt").read_text() == "ok"
