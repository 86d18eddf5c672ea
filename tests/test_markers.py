"""The suite's sorting (``conftest.py`` at the repository root) names files and tests that exist.

``make test-fast`` leaves out what conftest.py marks ``notebook``, ``processes`` or ``slow``, and
``pytest -n 2 --dist loadgroup`` runs the files that start process trees one at a time. Both read
tables of file paths and test names: a renamed file or test would silently drop out of a table (and
a slow test would land in the fast loop, or two process trees would race for ports). These tests
fail on such a rename instead.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from types import ModuleType

import pytest

from course_lib.paths import REPO_ROOT


def _load_root_conftest() -> ModuleType:
    spec = importlib.util.spec_from_file_location("root_conftest", REPO_ROOT / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sorting = _load_root_conftest()


def defined_tests(path: str) -> set[str]:
    """The names of the ``test_*`` functions defined at the top level of ``path``."""
    tree = ast.parse((REPO_ROOT / path).read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


TABLES = {
    "PROCESS_TESTS": sorting.PROCESS_TESTS,
    "SLOW_TESTS": sorting.SLOW_TESTS,
}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_listed_file_and_test_exists(table: str) -> None:
    for path, names in TABLES[table].items():
        assert (REPO_ROOT / path).is_file(), f"conftest.py {table} lists {path}, which is gone"
        if names is not None:
            missing = set(names) - defined_tests(path)
            assert not missing, f"conftest.py {table} lists {sorted(missing)} in {path}: gone"


def test_grouped_files_exist() -> None:
    for path in sorting.SERIAL_PROCESS_FILES | sorting.NOTEBOOK_FILES:
        assert (REPO_ROOT / path).is_file(), f"conftest.py lists {path}, which is gone"


def test_serial_files_are_process_files() -> None:
    """The files run one at a time are all marked ``processes`` (so test-fast skips them)."""
    for path in sorting.SERIAL_PROCESS_FILES:
        assert sorting.PROCESS_TESTS.get(path, False) is None, path


def test_groups() -> None:
    group = sorting.xdist_group
    assert group("notebooks/08_dp_sgd.ipynb", "Cell 3") == "notebooks/08_dp_sgd.ipynb"
    assert group("tests/lessons/test_student_edition.py", "test_untouched") is None
    assert group("tests/fl/test_flower.py", "test_anything") == "processes"
    assert group("tests/dp/test_accounting.py", "test_x") == "tests/dp/test_accounting.py"


def test_node_ids_map_to_their_groups() -> None:
    """The scheduler's scopes: a lesson's cells together, each student-edition run alone, the
    process-tree files in one scope, any other file's tests together."""
    group = sorting._group_of
    assert group("notebooks/08_dp_sgd.ipynb::Cell 3") == "notebooks/08_dp_sgd.ipynb"
    student = "tests/lessons/test_student_edition.py::test_untouched_student_notebook[08_dp_sgd]"
    assert group(student) == student
    assert group("tests/fl/test_flower.py::test_x[a-b]") == "processes"
    assert group("tests/smpc/test_across_hosts.py::test_y") == "processes"
    assert group("tests/dp/test_accounting.py::test_z[1]") == "tests/dp/test_accounting.py"


def test_two_workers_run_a_lesson_in_one_kernel() -> None:
    """Under ``make test``'s options, every cell of a lesson runs on the same xdist worker (one
    kernel, in order) — with cells on two workers, the second kernel lacks the first's names."""
    command = [
        sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
        "notebooks/00_welcome.ipynb", "tests/test_randomness.py",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    workers = {
        line.split()[0]
        for line in result.stdout.splitlines()
        if line.startswith("[gw") and "00_welcome" in line and "PASSED" in line
    }
    assert len(workers) == 1, workers


def test_the_markers_are_registered() -> None:
    """``--strict-markers`` refuses an unregistered name; the three conftest.py adds are there."""
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for marker in ("notebook", "processes", "slow"):
        assert f'"{marker}: ' in text, marker


def test_the_fast_loop_leaves_out_what_is_marked() -> None:
    """Collected as ``make test-fast`` selects, a lesson's cells, the student editions and the
    Flower tests are all deselected, and a unit test file is not."""
    command = [
        sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist",
        "-m", "not notebook and not processes and not slow",
        "notebooks/00_welcome.ipynb", "tests/lessons/test_student_edition.py",
        "tests/fl/test_flower.py", "tests/test_randomness.py",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    selected = [line for line in result.stdout.splitlines() if "::" in line]
    assert selected, result.stdout + result.stderr
    assert all(line.startswith("tests/test_randomness.py::") for line in selected), selected
