"""Submissions that attack the grader (issue 22), graded in one batch of lesson 05, each one's row
of ``grades.csv`` and feedback asserted exactly — and the same attack graded with the sandbox
switched off, to show that the sandbox is what stops it.

Lesson 05 has four function exercises: ``coin_flip``, ``rr_epsilon``, ``debias``,
``group_privacy``. Each submission is the student edition (its imports and exercise cells) with
answers filled in here:

- correct: the instructor's answers;
- snooper: ``coin_flip`` carries an object whose unpickling registers an ``atexit`` hook that
  forges results (judge-side code), ``rr_epsilon`` reads the solved notebook through
  ``course_lib.paths``, ``debias`` calls ``tools.grading``'s reference solutions, and
  ``group_privacy`` walks the call stack to the judge's references;
- faulty: on inputs other than the checker's, ``coin_flip`` kills the process running it and
  ``rr_epsilon`` never returns; the other two are right and must count;
- crasher: ``coin_flip`` forgets ``return``; a later cell kills the kernel;
- meddler: right answers, plus a process that detaches (``setsid``) to rewrite ``grades.csv``
  later, and malformed lines / sibling folders written into the batch's scratch;
- shortcut: ``rr_epsilon = randomized_response_epsilon`` (the course's own implementation),
  ``debias`` wrong, ``group_privacy`` a lookup table of the inputs the ✗ messages print.

The lesson is found from the notebooks' ``check("05.…")`` calls (double quotes, as the lesson
writes them): no ``--lesson`` is passed.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nbformat
import pytest

from course_lib.dp.mechanisms import randomized_response_epsilon
from course_lib.paths import REPO_ROOT
from tools.grade import grade_all, main, parse_options, write_csv
from tools.grading.lesson import lesson_exercises, lesson_notebook
from tools.student_edition import make_student_notebook

pytestmark = pytest.mark.usefixtures("sandbox_available")

FUNCTION_TIMEOUT = 10
MARKER = "grading-attack-7f3a"  # in the command line of every process an attack leaves behind

COIN = "def coin_flip_response(truth, first_coin, second_coin):\n" + (
    "    return torch.where(first_coin, truth, second_coin)\n\n"
    'check("05.coin_flip", coin_flip_response)'
)
RR = "def rr_epsilon(p_truth):\n" + (
    "    return math.log((p_truth + (1 - p_truth) / 2) / ((1 - p_truth) / 2))\n\n"
    'check("05.rr_epsilon", rr_epsilon)'
)
DEBIAS = "def debias(noisy_answers, p_truth):\n" + (
    "    observed = noisy_answers.double().mean().item()\n"
    "    return (observed - (1 - p_truth) / 2) / p_truth\n\n"
    'check("05.debias", debias)'
)
GROUP = "def group_epsilon(p_truth, k):\n" + (
    "    return k * math.log((1 + p_truth) / (1 - p_truth))\n\n"
    'check("05.group_privacy", group_epsilon)'
)
SOLVED = {"05.coin_flip": COIN, "05.rr_epsilon": RR, "05.debias": DEBIAS, "05.group_privacy": GROUP}

PICKLE_PAYLOAD = """
class Payload:
    def __reduce__(self):
        hook = "import atexit; atexit.register(lambda: open({path!r}, 'a').write('forged'))"
        return (exec, (hook,))

payload = Payload()

def coin_flip_response(truth, first_coin, second_coin):
    payload  # cloudpickle copies it with the function; loading the function runs the hook
    return truth

check("05.coin_flip", coin_flip_response)
"""
READS_SOLUTIONS = """
def rr_epsilon(p_truth):
    import json
    from course_lib.paths import REPO_ROOT
    solved = REPO_ROOT / "notebooks" / "05_local_dp_randomized_response.ipynb"
    cells = json.loads(solved.read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "def rr_epsilon" in "".join(c["source"]))
    namespace = {"math": math}
    exec(source.split("check(")[0], namespace)
    return namespace["rr_epsilon"](p_truth)

check("05.rr_epsilon", rr_epsilon)
"""
CALLS_REFERENCES = """
def debias(noisy_answers, p_truth):
    from tools.grading.lesson import reference_solutions
    return reference_solutions("05")["05.debias"](noisy_answers, p_truth)

check("05.debias", debias)
"""
WALKS_STACK = """
def group_epsilon(p_truth, k):
    import sys
    frame = sys._getframe(1)
    while frame is not None:
        reference = frame.f_locals.get("reference")
        if callable(reference):
            return reference(p_truth, k)
        course = frame.f_globals.get("randomized_response_epsilon")
        if callable(course):
            return k * course(p_truth)
        frame = frame.f_back
    return 0.0

check("05.group_privacy", group_epsilon)
"""
KILLS_ITSELF = """
def coin_flip_response(truth, first_coin, second_coin):
    if len(truth) != 8:  # right on the checker's 8 people; any other input kills the process
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
    return torch.where(first_coin, truth, second_coin)

check("05.coin_flip", coin_flip_response)
"""
NEVER_RETURNS = """
def rr_epsilon(p_truth):
    while p_truth not in (0.5, 0.25, 0.9):  # right on the checker's inputs, endless elsewhere
        try:
            pass
        except BaseException:
            pass
    return math.log((p_truth + (1 - p_truth) / 2) / ((1 - p_truth) / 2))

check("05.rr_epsilon", rr_epsilon)
"""
NO_RETURN = """
def coin_flip_response(truth, first_coin, second_coin):
    torch.where(first_coin, truth, second_coin)

check("05.coin_flip", coin_flip_response)
"""
KILLS_KERNEL = "import os\nos._exit(3)"
DETACHES = """
import subprocess
rewrite = "sleep 3; printf 'meddler,1,1,1,1,4,\\\\n' >> {grades}; sleep 600 # {marker}"
subprocess.Popen(["setsid", "sh", "-c", rewrite], start_new_session=True)
"""
POISONS_SCRATCH = """
import os
from pathlib import Path
for target in ("events.jsonl", "../events.jsonl", "answers/05.debias.json.extra"):
    try:
        with open(target, "a") as file:
            file.write("{not json\\n")
    except OSError:
        pass
for sibling in ("../submission-99", "../zzz"):
    try:
        os.makedirs(sibling)
    except OSError:
        pass
"""
ALIAS = 'rr_epsilon = randomized_response_epsilon\n\ncheck("05.rr_epsilon", rr_epsilon)'
WRONG_DEBIAS = "def debias(noisy_answers, p_truth):\n" + (
    '    return noisy_answers.double().mean().item()\n\ncheck("05.debias", debias)'
)
TABLE = {(p, k): k * randomized_response_epsilon(p) for p, k in [(0.5, 1), (0.5, 4), (0.25, 3)]}
TABLE[0.9, 2] = 2 * randomized_response_epsilon(0.9)
LOOKUP = f"TABLE = {TABLE!r}\n\ndef group_epsilon(p_truth, k):\n" + (
    '    return TABLE.get((p_truth, k), 0.0)\n\ncheck("05.group_privacy", group_epsilon)'
)


def _submission(
    changes: dict[str, str], *, after: dict[str, str] | None = None
) -> nbformat.NotebookNode:
    """Lesson 05's student edition, its imports and exercise cells only, with the cells of
    ``changes`` (exercise → source) replaced and a cell inserted after each exercise of ``after``
    ("imports": after the cell importing course_lib)."""
    notebook = make_student_notebook(nbformat.read(lesson_notebook("05"), as_version=4))
    ids = {exercise.name: exercise.cell_id for exercise in lesson_exercises("05")}
    notebook.cells = [
        cell
        for cell in notebook.cells
        if cell.cell_type == "markdown"
        or "from course_lib" in cell.source
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
            if (name == "imports" and "from course_lib" in cell.source)
            or cell.get("id") == ids.get(name)
        )
        notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
    return notebook


def _submissions(folder: Path) -> dict[str, nbformat.NotebookNode]:
    grades = folder / "grades.csv"
    forged = folder / "forged.txt"
    return {
        "correct": _submission(SOLVED),
        "snooper": _submission(
            {
                "05.coin_flip": PICKLE_PAYLOAD.format(path=str(forged)),
                "05.rr_epsilon": READS_SOLUTIONS,
                "05.debias": CALLS_REFERENCES,
                "05.group_privacy": WALKS_STACK,
            }
        ),
        "faulty": _submission(
            {**SOLVED, "05.coin_flip": KILLS_ITSELF, "05.rr_epsilon": NEVER_RETURNS}
        ),
        "crasher": _submission(
            {**SOLVED, "05.coin_flip": NO_RETURN}, after={"05.rr_epsilon": KILLS_KERNEL}
        ),
        "meddler": _submission(
            SOLVED,
            after={
                "imports": DETACHES.format(grades=str(grades), marker=MARKER),
                "05.coin_flip": POISONS_SCRATCH,
            },
        ),
        "shortcut": _submission(
            {
                **SOLVED,
                "05.rr_epsilon": ALIAS,
                "05.debias": WRONG_DEBIAS,
                "05.group_privacy": LOOKUP,
            }
        ),
    }


EXPECTED = {
    "correct": ["1", "1", "1", "1", "4", ""],
    "crasher": [
        "0",
        "1",
        "0",
        "0",
        "1",
        "code cell 4 stopped the kernel (it crashed or was killed): the cells before it "
        "counted, the cells after it did not run",
    ],
    "faulty": ["0", "0", "1", "1", "2", ""],
    "meddler": ["1", "1", "1", "1", "4", ""],
    "shortcut": [
        "1",
        "0",
        "0",
        "0",
        "1",
        "05.rr_epsilon answered with `course_lib.dp.mechanisms.randomized_response_epsilon`, "
        "a function it imported",
    ],
    "snooper": ["0", "0", "0", "0", "0", ""],
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory, sandbox_available: None) -> Path:
    folder = tmp_path_factory.mktemp("attacks")
    submissions = folder / "submissions"
    submissions.mkdir()
    for student, notebook in _submissions(folder).items():
        nbformat.write(notebook, submissions / f"{student}.ipynb")
    arguments = [str(submissions), "--out", str(folder / "grades.csv"), "--jobs", "2"]
    arguments += ["--seed", "11", "--function-timeout", str(FUNCTION_TIMEOUT)]
    arguments += ["--cell-timeout", "60", "--notebook-timeout", "300"]
    main(arguments)
    return folder


def _rows(path: Path) -> dict[str, list[str]]:
    with path.open(encoding="utf-8") as file:
        header, *rows = csv.reader(file)
    assert header == ["student", *(e.name for e in lesson_exercises("05")), "total", "problems"]
    return {row[0]: row[1:] for row in rows}


def _feedback(graded: Path, student: str) -> str:
    return (graded / "grades_feedback" / f"{student}.md").read_text(encoding="utf-8")


def test_each_attack_earns_exactly_what_it_solved(graded: Path) -> None:
    assert _rows(graded / "grades.csv") == EXPECTED


def test_nothing_the_submissions_started_outlives_grading(graded: Path) -> None:
    """The detached ``setsid`` process died with its sandbox: no process carries its marker, and
    the row it meant to forge is as graded."""
    survivors = []
    for status in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if MARKER.encode() in status.read_bytes():
                survivors.append(status.parent.name)
        except OSError:
            continue
    assert survivors == []
    assert _rows(graded / "grades.csv")["meddler"] == EXPECTED["meddler"]
    # The unpickling hook of "snooper" ran only inside its sandbox, which cannot see this folder.
    assert not (graded / "forged.txt").exists()


def test_snooping_answers_find_nothing_to_read(graded: Path) -> None:
    solved = REPO_ROOT / "notebooks" / "05_local_dp_randomized_response.ipynb"
    feedback = _feedback(graded, "snooper")
    assert (
        "✗ **05.rr_epsilon**: your answer raised FileNotFoundError: [Errno 2] No such file or "
        f"directory: '{solved}'" in feedback
    )
    assert (
        "✗ **05.debias**: your answer raised ModuleNotFoundError: No module named "
        "'tools.grading.lesson'" in feedback
    )
    assert "✗ **05.group_privacy**: group_epsilon(0.5, 1) is 0, expected 1.09861" in feedback
    assert "✗ **05.coin_flip**: coin_flip_response(truth, first, second) on the checker's 8" in (
        feedback
    )


def test_a_faulty_function_costs_its_own_exercise_only(graded: Path) -> None:
    feedback = _feedback(graded, "faulty")
    assert (
        "✗ **05.coin_flip**: your function killed the process running it; no other exercise "
        "is affected" in feedback
    )
    assert (
        f"✗ **05.rr_epsilon**: your function ran past this exercise's {FUNCTION_TIMEOUT} s "
        "limit; no other exercise is affected" in feedback
    )
    assert "✓ **05.debias**: correct (course check and hidden tests)" in feedback


def test_a_kernel_crash_names_its_cell_and_keeps_earlier_work(graded: Path) -> None:
    feedback = _feedback(graded, "crasher")
    assert "- code cell 4 stopped the kernel (it crashed or was killed)" in feedback
    assert "✓ **05.rr_epsilon**: correct (course check and hidden tests)" in feedback
    assert "✗ **05.debias**: no answer: `debias` was not defined when its check cell ran" in (
        feedback
    )
    assert (
        "✗ **05.coin_flip**: coin_flip_response(truth, first, second) on the checker's 8 people "
        "is None — did you forget `return`? — nudge: the first coin decides" in feedback
    )


def test_shortcuts_are_caught_and_wrong_answers_get_the_nudge(graded: Path) -> None:
    feedback = _feedback(graded, "shortcut")
    assert (
        "✗ **05.rr_epsilon**: your answer is `course_lib.dp.mechanisms."
        "randomized_response_epsilon` itself, not a function you wrote: no mark (graded with "
        "--library-answers zero)" in feedback
    )
    assert "✗ **05.group_privacy**: hidden test: group_epsilon(" in feedback
    assert "✗ **05.debias**: debias(noisy, p_truth=0.5) is 0.6, expected 0.7 — nudge: " in (
        feedback
    )


def test_the_sandbox_is_what_stops_the_snooper(
    graded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same snooping submission graded with the sandbox switched off (a switch only this test
    uses) reads the solutions and the references and earns their marks: so the batch above
    earned nothing because of the sandbox, and this test fails if the sandbox stops working."""
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    (submissions / "snooper.ipynb").write_bytes(
        (graded / "submissions" / "snooper.ipynb").read_bytes()
    )
    options = parse_options([str(submissions), "--seed", "11", "--jobs", "1"])
    options.sandbox = False
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    lesson, grades = grade_all(submissions, options)
    write_csv(tmp_path / "grades.csv", [e.name for e in lesson_exercises(lesson)], grades)
    assert _rows(tmp_path / "grades.csv")["snooper"] == ["0", "1", "1", "0", "2", ""]
    assert os.environ["COURSE_OFFLINE"] == "1"
