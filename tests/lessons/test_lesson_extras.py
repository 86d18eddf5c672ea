"""Each lesson runs with exactly what its install cell installs (issue #21).

In Colab a lesson's install cell installs ``course_lib`` with at most one extra (``[dp]``,
``[fl]``, ``[he]``); this machine has all of them, so an import of another extra's package
passes here and fails there — as ``check()`` once did in every lesson but 18–19, because the
lesson 19 checkers imported ``course_lib.psi``, which imported ``phe`` and ``rbcl`` at the top.

Here every lesson's import statements (each ``import``/``from … import`` in its code cells,
solutions included, as written) and all exercise checkers are run in a fresh Python process in
which the packages of the other extras cannot be imported (``colab_imports/sitecustomize.py``),
and each exercise the lesson checks is checked with an unanswered ``...``: nothing may raise, and
each check must answer with the friendly ✗. The lessons themselves run top to bottom under the
same blocker in ``test_student_edition.py``.

Controls: the blocker really blocks (``import phe`` fails there, naming the package), and the old
top-level imports of ``course_lib.psi`` put back into a copy of the package make lesson 00 fail.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

from course_lib.paths import REPO_ROOT
from tools import colab

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BLOCKER = REPO_ROOT / "tests" / "lessons" / "colab_imports" / "sitecustomize.py"
CHECK_CALL = re.compile(r"""\bcheck\(\s*["'](\d\d\.\w+)["']""")
FRIENDLY_FAIL = re.compile(r"^✗ (\d\d\.\w+): not (?:answered|implemented) yet —", re.M)
#: The packages each extra brings (their import names); a lesson of another extra has none.
EXTRA_PACKAGES = {
    "dp": {"opacus"},
    "fl": {"syft", "syft_rds", "flwr", "ray"},
    "he": {"tenseal", "phe", "gmpy2", "rbcl"},
}

#: The course_lib modules that cannot be imported without an extra, and that extra: code that runs
#: only where the extra is installed (a syft job inside the data owner's server; the wrappers of
#: TenSEAL and phe). Every other module imports with the core alone.
NEEDS_EXTRA = {
    "course_lib.fl.jobs.secure_round": "fl",
    "course_lib.he.ckks": "he",
    "course_lib.he.paillier": "he",
}

#: Runs in the blocked process: reads [{"lesson", "imports", "exercises"}] from stdin, prints one
#: JSON line: per lesson, the import statements that raised and what each check printed; then the
#: course_lib modules (all of them, walked) that raised on import.
PROBE = """
import contextlib, io, json, sys
lessons = json.load(sys.stdin)
report = {}
for lesson in lessons:
    failed = []
    for statement in lesson["imports"]:
        try:
            exec(statement, {})
        except BaseException as error:
            failed.append(f"{statement}  ->  {type(error).__name__}: {error}")
    printed = {}
    try:
        from course_lib.exercises import check
        for name in lesson["exercises"]:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                check(name, ...)
            printed[name] = out.getvalue()
    except BaseException as error:
        failed.append(f"check(...)  ->  {type(error).__name__}: {error}")
    report[lesson["lesson"]] = {"failed": failed, "printed": printed}
import course_lib, importlib, pkgutil
modules = {}
for module in pkgutil.walk_packages(course_lib.__path__, "course_lib."):
    try:
        importlib.import_module(module.name)
    except BaseException as error:
        modules[module.name] = f"{type(error).__name__}: {error}"
print(json.dumps({"lessons": report, "modules": modules, "course_lib": course_lib.__file__}))
"""


def load_blocker() -> ModuleType:
    """``colab_imports/sitecustomize.py`` as a module (its folder is for PYTHONPATH, no package)."""
    spec = importlib.util.spec_from_file_location("course_colab_imports", BLOCKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


blocker = load_blocker()


def lesson_extra(lesson: nbformat.NotebookNode) -> str:
    """The extra the lesson's install cell (its second cell) installs: "", "dp", "fl" or "he"."""
    return colab.install_extra(lesson.cells[1].source)


def _python_source(cell_source: str) -> str:
    """A code cell as Python: IPython's ``!shell`` and ``%magic`` lines become ``pass``."""
    lines = []
    for line in cell_source.splitlines():
        code = line.lstrip()
        lines.append(line[: len(line) - len(code)] + "pass" if code[:1] in ("!", "%") else line)
    return "\n".join(lines)


def import_statements(lesson: nbformat.NotebookNode) -> list[str]:
    """Every absolute import statement in the lesson's code cells (solutions and function bodies
    included), as written, in order, without repeats."""
    statements: dict[str, None] = {}
    for cell in lesson.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(_python_source(cell.source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) or (
                isinstance(node, ast.ImportFrom) and not node.level
            ):
                statements[ast.unparse(node)] = None
    return list(statements)


def checked_exercises(lesson: nbformat.NotebookNode) -> list[str]:
    return [
        name
        for cell in lesson.cells
        if cell.cell_type == "code"
        for name in CHECK_CALL.findall(cell.source)
    ]


def run_probe(
    lessons: list[dict], extra: str, *, cwd: Path, pythonpath: str = ""
) -> dict[str, object]:
    """Run :data:`PROBE` on ``lessons`` in a process that cannot import what ``extra`` lacks."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        base["PYTHONPATH"] = pythonpath
    env = blocker.blocking_environment(blocker.blocked_imports(extra), base)
    run = subprocess.run(
        [sys.executable, "-c", PROBE],
        input=json.dumps(lessons),
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**env, "OMP_NUM_THREADS": "1", "COURSE_OFFLINE": "1"},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def _lesson_request(path: Path) -> dict:
    lesson = nbformat.read(path, as_version=4)
    return {
        "lesson": path.name,
        "imports": import_statements(lesson),
        "exercises": checked_exercises(lesson),
    }


@functools.cache
def probe_extra(extra: str) -> dict[str, dict]:
    """The probe's report for every lesson installing ``extra`` and for the course_lib modules
    (one process per extra: a blocked package never enters ``sys.modules``, so lessons sharing
    a process cannot mask one another's blocked imports)."""
    lessons = [
        _lesson_request(path)
        for path in NOTEBOOKS
        if lesson_extra(nbformat.read(path, as_version=4)) == extra
    ]
    return run_probe(lessons, extra, cwd=REPO_ROOT)  # type: ignore[return-value]


def test_every_lesson_installs_one_known_extra() -> None:
    extras = {path.name: lesson_extra(nbformat.read(path, as_version=4)) for path in NOTEBOOKS}
    assert len(extras) >= 20 and set(extras.values()) <= set(blocker.EXTRAS), extras


@pytest.mark.parametrize("lesson_path", NOTEBOOKS, ids=lambda path: path.stem)
def test_lesson_imports_and_checks_need_only_its_extra(lesson_path: Path) -> None:
    lesson = nbformat.read(lesson_path, as_version=4)
    extra = lesson_extra(lesson)
    installs = f"course_lib[{extra}]" if extra else "course_lib (no extra)"
    report = probe_extra(extra)["lessons"][lesson_path.name]
    assert not report["failed"], (
        f"{lesson_path.name} installs {installs} in Colab, but:\n" + "\n".join(report["failed"])
    )
    exercises = checked_exercises(lesson)
    assert exercises and sorted(report["printed"]) == sorted(set(exercises))
    for name, printed in report["printed"].items():
        assert FRIENDLY_FAIL.findall(printed) == [name], f"{lesson_path.name}: {printed!r}"


@pytest.mark.parametrize("extra", blocker.EXTRAS, ids=lambda extra: extra or "core")
def test_every_course_lib_module_imports_with_one_extra(extra: str) -> None:
    """With only the core and ``extra`` importable, every course_lib module imports (checkers
    and the modules lessons of another extra use included) except those of :data:`NEEDS_EXTRA`
    that need another extra — and those fail naming a package of their own extra."""
    failed = probe_extra(extra)["modules"]
    assert sorted(failed) == sorted(m for m, e in NEEDS_EXTRA.items() if e != extra), failed
    for module, error in failed.items():
        package = re.search(r"No module named '(\w+)': blocked to simulate Colab", error)
        assert package and package[1] in EXTRA_PACKAGES[NEEDS_EXTRA[module]], (module, error)


# -- controls: the blocker blocks, and the old imports would fail --------------------------------


def test_blocked_sets_follow_the_extras() -> None:
    everything = set().union(*EXTRA_PACKAGES.values())
    for extra in blocker.EXTRAS:
        blocked = set(blocker.blocked_imports(extra))
        own = EXTRA_PACKAGES.get(extra, set())
        assert everything - own <= blocked, (extra, sorted(everything - own - blocked))
        assert not own & blocked, extra
        assert not {"torch", "numpy", "course_lib", "IPython", "ipykernel"} & blocked
    with pytest.raises(ValueError, match="extra must be one of"):
        blocker.blocked_imports("gpu")


def test_the_blocker_refuses_the_package_and_says_why(tmp_path: Path) -> None:
    script = (
        "import numpy, torch\n"
        "for name in ('phe', 'phe.paillier', 'rbcl', 'syft', 'opacus'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ModuleNotFoundError as error:\n"
        "        print(name, error.name, '|', error)\n"
        "    else:\n"
        "        print(name, 'IMPORTED')\n"
    )
    env = blocker.blocking_environment(blocker.blocked_imports(""), os.environ)
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 5 and "IMPORTED" not in run.stdout, run.stdout
    for line, name in zip(lines, ("phe", "phe", "rbcl", "syft", "opacus"), strict=True):
        assert line.split(" | ")[0].split()[1] == name
        assert f"No module named '{name}': blocked to simulate Colab" in line
    # without COURSE_BLOCK_IMPORTS the same folder on PYTHONPATH blocks nothing
    env.pop(blocker.ENV_VAR)
    run = subprocess.run(
        [sys.executable, "-c", "import phe, rbcl, syft"], env=env, cwd=tmp_path, check=False
    )
    assert run.returncode == 0


#: ``course_lib.psi``'s imports before they were moved into the functions that use them.
OLD_PSI_IMPORTS = (
    "from phe.paillier import EncryptedNumber, PaillierPrivateKey, PaillierPublicKey\n"
    "from rbcl import crypto_core_ristretto255_from_hash, crypto_scalarmult_ristretto255\n"
)


def test_reverting_the_lazy_imports_fails_lesson_00(tmp_path: Path) -> None:
    """A copy of course_lib whose psi.py imports phe and rbcl at the top again, as it did, makes
    lesson 00's checks fail in the blocked process, naming the package."""
    copy = tmp_path / "course_lib"
    shutil.copytree(REPO_ROOT / "course_lib", copy, ignore=shutil.ignore_patterns("__pycache__"))
    psi = copy / "psi.py"
    source = psi.read_text(encoding="utf-8")
    future = "from __future__ import annotations\n"
    assert future in source
    psi.write_text(source.replace(future, future + OLD_PSI_IMPORTS, 1), encoding="utf-8")
    request = [_lesson_request(REPO_ROOT / "notebooks" / "00_welcome.ipynb")]
    result = run_probe(request, "", cwd=tmp_path, pythonpath=str(tmp_path))
    assert result["course_lib"] == str(copy / "__init__.py"), "the copy was not the one imported"
    failed = result["lessons"]["00_welcome.ipynb"]["failed"]  # type: ignore[index]
    assert failed and "No module named 'phe': blocked to simulate Colab" in "\n".join(failed)
