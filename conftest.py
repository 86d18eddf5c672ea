"""How the whole suite is sorted, for ``make test-fast`` and for ``pytest -n 2`` (pytest-xdist).

Loaded for every pytest run from the repository (tests/, notebooks/ and course_lib's doctests), so
test files and notebooks need no marks of their own:

* markers (registered in pyproject.toml, ``--strict-markers``): ``notebook`` (every nbval cell of
  ``notebooks/`` and the student-edition run of each lesson), ``processes`` (tests that start OS
  processes: Flower federations, torch.distributed parties, syft jobs, Jupyter kernels, git,
  Chromium) and ``slow`` (over 10 s on one core of a 2-core machine, measured with
  ``--durations``). ``tests/test_markers.py`` checks that every name listed here exists, so a
  rename cannot silently drop a marker.
* under ``-n N --dist loadgroup`` each group (:func:`xdist_group`) runs on one worker, in
  collection order: a notebook's cells share one kernel, a file's module-scoped fixtures are built
  once, and the files whose tests start process trees run one at a time, so they neither race for
  ports nor fight for the cores. The groups are computed here from each test's node id
  (:func:`pytest_xdist_make_scheduler`), not with ``xdist_group`` marks: pytest-xdist 3.8 groups
  marked tests by rewriting ``item._nodeid``, which pytest 9.2 no longer reads, so its marks
  silently stopped grouping (a lesson's cells then ran in two kernels).
"""

from __future__ import annotations

import pytest

#: Tests whose every item is a whole lesson run in a fresh kernel (one xdist unit each).
NOTEBOOK_FILES = frozenset({"tests/lessons/test_student_edition.py"})

#: File -> names of its tests that start OS processes (``None``: every test of the file).
PROCESS_TESTS: dict[str, frozenset[str] | None] = {
    "tests/fl/test_flower.py": None,
    "tests/fl/test_deployment.py": None,
    "tests/fl/test_secure_syft.py": frozenset({"test_a_secure_round_through_syft_jobs"}),
    "tests/smpc/test_distributed.py": None,
    "tests/smpc/test_across_hosts.py": None,
    "tests/lessons/test_student_edition.py": None,
    "tests/lessons/test_lesson_extras.py": None,
    "tests/tools/test_grading.py": None,
    "tests/tools/test_grading_attacks.py": None,
    "tests/tools/test_colab.py": frozenset({"test_the_install_cell_is_safe_to_run_twice"}),
    "tests/tools/test_site.py": frozenset({"test_pages_render_offline_with_formulas_and_images"}),
    "tests/tools/test_student_edition_sync.py": frozenset(
        {"test_rerunning_make_student_keeps_the_learners_edits"}
    ),
    "tests/test_markers.py": frozenset(
        {
            "test_the_fast_loop_leaves_out_what_is_marked",
            "test_two_workers_run_a_lesson_in_one_kernel",
        }
    ),
}

#: File -> names of its tests that take over 10 s on one core (``None``: every test of the file),
#: from ``--durations``; besides these, every test that starts processes is left out of the fast
#: loop anyway.
SLOW_TESTS: dict[str, frozenset[str] | None] = {
    "tests/fl/test_flower.py": None,
    "tests/fl/test_syft_bridge.py": frozenset(
        {"test_a_fedavg_round_through_syft_matches_local_training"}
    ),
    "tests/fl/test_gradient_inversion.py": frozenset(
        {
            "test_the_attack_stops_once_it_has_converged",
            "test_more_attack_budget_recovers_a_batch_that_a_small_budget_does_not",
        }
    ),
    "tests/tools/test_site.py": None,
    "tests/lessons/test_student_edition.py": None,
    "tests/lessons/test_lesson_extras.py": None,
}

#: Files whose tests start process trees that listen on ports or build network namespaces: they
#: share one xdist group, so they run one at a time.
SERIAL_PROCESS_FILES = frozenset(
    {
        "tests/fl/test_flower.py",
        "tests/fl/test_deployment.py",
        "tests/smpc/test_distributed.py",
        "tests/smpc/test_across_hosts.py",
    }
)


def _listed(table: dict[str, frozenset[str] | None], path: str, name: str) -> bool:
    if path not in table:
        return False
    names = table[path]
    return names is None or name in names


def xdist_group(path: str, name: str) -> str | None:
    """The xdist group of test ``name`` in ``path`` (relative, with ``/``); ``None``: no group,
    the test is a unit of its own."""
    if path.endswith(".ipynb"):
        return path  # one notebook: one kernel, its cells in order
    if path in NOTEBOOK_FILES:
        return None  # each lesson run is independent and long: let xdist balance them one by one
    if path in SERIAL_PROCESS_FILES:
        return "processes"
    return path  # a file's tests together: module-scoped fixtures are built once


def _group_of(nodeid: str) -> str:
    """The xdist work unit of a node id (``path::name[params]``): its group, or the id itself."""
    path, _, rest = nodeid.partition("::")
    name = rest.split("::")[-1].split("[")[0]
    group = xdist_group(path, name)
    return nodeid if group is None else group


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own; absent without xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """Under ``--dist loadgroup``: xdist's scope scheduling, with :func:`xdist_group`'s groups as
    the scopes (each scope runs whole, in collection order, on one worker)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group_of(nodeid)

    return GroupScheduling(config, log)


def pytest_itemcollected(item: pytest.Item) -> None:
    """Marks each test as it is collected, before ``-m`` deselects."""
    config = item.config
    path = item.path.relative_to(config.rootpath).as_posix()
    name = getattr(item, "originalname", item.name)
    if path.endswith(".ipynb") or path in NOTEBOOK_FILES:
        item.add_marker(pytest.mark.notebook)
    if _listed(PROCESS_TESTS, path, name):
        item.add_marker(pytest.mark.processes)
    if _listed(SLOW_TESTS, path, name):
        item.add_marker(pytest.mark.slow)
