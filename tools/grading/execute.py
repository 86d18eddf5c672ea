"""Run one submission in a fresh Jupyter kernel and copy its answers out.

``python -m tools.grading.execute NOTEBOOK PLAN.json WORKDIR --cell-timeout S`` runs every code
cell of NOTEBOOK in order (a cell that raises is recorded and the next cell runs, as *Run All* with
"continue on error" would; a cell that runs past S seconds is interrupted and recorded). Right
after the cell holding an exercise's ``check`` (see :mod:`tools.grading.lesson`) it pickles that
exercise's answer from the kernel's namespace with cloudpickle into ``WORKDIR/answers/NAME.pkl``.

Everything it learns (also the kernel's process group id) goes to ``WORKDIR/events.jsonl``, one
JSON object a line, written as it happens, so a run killed for taking too long still leaves the
answers and errors collected so far.
The kernel's working directory is ``WORKDIR/cwd``. Nothing printed by the notebook is ever read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

#: Runs in the submission's kernel, in a namespace of its own (the learner's globals untouched).
_CAPTURE = """
import cloudpickle
if name in ns:
    with open(path, "wb") as file:
        cloudpickle.dump(ns[name], file)
"""


def _capture_source(name: str, path: Path) -> str:
    scope = f"{{'ns': get_ipython().user_ns, 'name': {name!r}, 'path': {str(path)!r}}}"
    return f"exec({_CAPTURE!r}, {scope})"


def capture_points(notebook: nbformat.NotebookNode, plan: list[dict[str, Any]]) -> dict[int, list]:
    """For each code cell index, the exercises whose answer is copied right after it runs: the cell
    with the instructor's cell id, else the first mentioning the exercise's name, else the last."""
    code = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    points: dict[int, list] = {}
    for exercise in plan:
        by_id = [i for i in code if notebook.cells[i].get("id") == exercise["cell_id"]]
        by_name = [i for i in code if exercise["name"] in notebook.cells[i].source]
        index = (by_id or by_name or code[-1:] or [-1])[0]
        points.setdefault(index, []).append(exercise)
    return points


def run(notebook_path: Path, plan: list[dict[str, Any]], workdir: Path, cell_timeout: int) -> None:
    """Execute ``notebook_path`` and collect the answers of ``plan`` (see the module docstring)."""
    answers, cwd = workdir / "answers", workdir / "cwd"
    answers.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(exist_ok=True)
    events = (workdir / "events.jsonl").open("a", encoding="utf-8")

    def record(**event: Any) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    notebook = nbformat.read(notebook_path, as_version=4)
    points = capture_points(notebook, plan)
    client = NotebookClient(
        notebook,
        timeout=cell_timeout,
        kernel_name="python3",
        allow_errors=True,
        interrupt_on_timeout=True,
        startup_timeout=120,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.reset_execution_trackers()
    number = 0
    with client.setup_kernel():
        # The kernel runs in a session of its own: the grader kills it by this id on a timeout.
        record(kernel_pgid=client.km.provisioner.pgid)
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            number += 1
            started = time.monotonic()
            client.execute_cell(cell, index)
            error = next((o for o in cell.outputs if o.output_type == "error"), None)
            if error is not None:
                timed_out = (
                    error.ename == "KeyboardInterrupt"
                    and time.monotonic() - started >= cell_timeout
                )
                record(cell=number, error=f"{error.ename}: {error.evalue}", timeout=timed_out)
            for exercise in points.get(index, []):
                path = answers / f"{exercise['name']}.pkl"
                probe = nbformat.v4.new_code_cell(_capture_source(exercise["answer"], path))
                client.execute_cell(probe, index, store_history=False)
                failed = next((o for o in probe.outputs if o.output_type == "error"), None)
                if failed is not None:
                    reason = f"{failed.ename}: {failed.evalue}"
                    record(exercise=exercise["name"], capture_error=reason)
    record(done=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("plan", type=Path)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--cell-timeout", type=int, required=True)
    args = parser.parse_args(argv)
    plan = json.loads(args.plan.read_text(encoding="utf-8"))
    run(args.notebook, plan, args.workdir, args.cell_timeout)


if __name__ == "__main__":
    main()
