"""The grader's code that runs *inside* the sandbox (:mod:`tools.grading.sandbox`), next to the
student's code. It holds no secret: no solution, no reference, no hidden input, no seed.

``python -m tools.grading.execute run NOTEBOOK PLAN.json --cell-timeout S`` runs every code cell of
NOTEBOOK in order in a fresh Jupyter kernel (a cell that raises is recorded and the next cell runs,
as *Run All* with "continue on error" would; a cell that runs past S seconds is interrupted; a cell
that kills the kernel is recorded and ends the run). Right after the cell holding an exercise's
``check`` it copies that exercise's answer out of the kernel into ``answers/``: a value as plain
data (:mod:`tools.grading.codec`, ``NAME.json``), a function with cloudpickle (``NAME.pkl``, which
only this sandbox's ``serve`` ever loads). Everything it learns goes to ``events.jsonl`` as it
happens. Paths are relative to the working directory, the submission's scratch folder.

``python -m tools.grading.execute serve`` is the *callee*: the judge sends it requests on stdin —
``load`` an exercise's function, ``call`` it on the judge's inputs — as length-prefixed pickles
(the judge's own data), and it answers each with one JSON line on the file descriptor it was given
(the function's result and its arguments' new contents, as plain data; or the error it raised).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import struct
import traceback
import types
from pathlib import Path
from typing import Any


class _CellTimeout(KeyboardInterrupt):
    """Raised in the cell running past the cell timeout (a KeyboardInterrupt, as Jupyter's)."""


def capture_points(cells: list[dict[str, Any]], plan: list[dict[str, Any]]) -> dict[int, list]:
    """For each code cell index, the exercises whose answer is copied right after it runs: the
    cell with the instructor's cell id, else the first mentioning the exercise's name, else the
    last."""
    points: dict[int, list] = {}
    for exercise in plan:
        by_id = [i for i, cell in enumerate(cells) if cell.get("id") == exercise["cell_id"]]
        by_name = [i for i, cell in enumerate(cells) if exercise["name"] in cell["source"]]
        index = (by_id or by_name or [len(cells) - 1])[0]
        points.setdefault(index, []).append(exercise)
    return points


def code_cells(path: Path) -> list[dict[str, Any]]:
    """The notebook's code cells: ``{"id", "source"}`` each (sources joined as Jupyter does)."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = []
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            text = "".join(source) if isinstance(source, list) else str(source)
            cells.append({"id": cell.get("id"), "source": text})
    return cells


def _record(**event: Any) -> None:
    with Path("events.jsonl").open("a", encoding="utf-8") as events:
        events.write(json.dumps(event) + "\n")


def _capture(
    value: Any, exercise: dict[str, Any], functions: dict[str, Any], defined: bool
) -> dict[str, Any]:
    """The answer record of one exercise (and, for a function, its pickle and live copy)."""
    import cloudpickle  # type: ignore[import-untyped]

    from tools.grading import codec

    name = exercise["name"]
    if not defined:
        return {"missing": True}
    if value is Ellipsis:
        return {"value": codec.encode(value)}
    if exercise["function"]:
        if not isinstance(value, types.FunctionType):
            return {"kind": type(value).__name__}
        pickled = cloudpickle.dumps(value)
        (Path("answers") / f"{name}.pkl").write_bytes(pickled)
        functions[name] = cloudpickle.loads(pickled)  # as it was now, not after later cells
        return {"function": True}
    try:
        return {"value": codec.encode(value)}
    except codec.NotPlainData as error:
        return {"kind": type(value).__name__, "why": str(error)}


def run(notebook_path: Path, plan: list[dict[str, Any]], cell_timeout: int) -> dict[str, Any]:
    """Execute the code cells of ``notebook_path`` in an IPython shell in this process and collect
    the answers of ``plan`` (see the module docstring). Returns the live functions by exercise."""
    from IPython.core.interactiveshell import InteractiveShell

    class Shell(InteractiveShell):
        def enable_gui(self, gui: Any = None) -> None:
            """No event loop: figures render off-screen (MPLBACKEND=Agg)."""

    answers = Path("answers")
    answers.mkdir(exist_ok=True)
    cells = code_cells(notebook_path)
    points = capture_points(cells, plan)
    shell = Shell.instance(colors="NoColor")
    functions: dict[str, Any] = {}
    timed_out = False

    def on_alarm(signum: int, frame: Any) -> None:
        nonlocal timed_out
        timed_out = True
        raise _CellTimeout

    signal.signal(signal.SIGALRM, on_alarm)
    for index, cell in enumerate(cells):
        number = index + 1
        _record(start=number)
        timed_out = False
        signal.setitimer(signal.ITIMER_REAL, cell_timeout)
        try:
            result = shell.run_cell(cell["source"], store_history=True)
            error = result.error_before_exec or result.error_in_exec
        except KeyboardInterrupt as interrupt:  # the timer fired outside the cell's own code
            error = interrupt
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if error is not None:
            name = (
                "KeyboardInterrupt"
                if isinstance(error, KeyboardInterrupt)
                else (type(error).__name__)
            )
            _record(cell=number, error=f"{name}: {error}", timeout=timed_out)
        for exercise in points.get(index, []):
            variable = exercise["answer"]
            try:
                record = _capture(
                    shell.user_ns.get(variable), exercise, functions, variable in shell.user_ns
                )
            except Exception as failed:  # cloudpickle may fail on what a cell built
                _record(
                    exercise=exercise["name"], capture_error=f"{type(failed).__name__}: {failed}"
                )
                record = {"kind": type(shell.user_ns.get(variable)).__name__}
            path = answers / f"{exercise['name']}.json"
            path.write_text(json.dumps(record), encoding="utf-8")
    _record(done=True)
    return functions


def _read_frame(stream: Any) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        return None
    (length,) = struct.unpack("!Q", header)
    return pickle.loads(stream.read(length))


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str | bytes)


def serve(functions: dict[str, Any], requests: Any, replies: Any) -> None:
    """The callee loop (see the module docstring): ``functions`` already loaded by exercise;
    others are loaded from ``answers/NAME.pkl`` on request."""
    from tools.grading import codec

    def reply(**message: Any) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    reply(ready=True)

    while (request := _read_frame(requests)) is not None:
        name = request["exercise"]
        if request["op"] == "load":
            if name in functions:
                reply(ok=True)
                continue
            try:
                with open(Path("answers") / f"{name}.pkl", "rb") as file:
                    function = pickle.load(file)
            except Exception as error:
                reply(error=f"{type(error).__name__}: {error}", stage="load")
                continue
            if not isinstance(function, types.FunctionType):
                reply(error=f"not a function: {type(function).__name__}", stage="load")
                continue
            functions[name] = function
            reply(ok=True)
            continue
        args, kwargs = request["args"], request["kwargs"]
        for root, entries in request.get("files", {}).items():  # the checker's folders, recreated
            for relative, content in sorted(entries.items()):
                path = Path(root) / relative
                if content is None:
                    path.mkdir(parents=True, exist_ok=True)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(content)
        arguments = codec.tensors_in([*args, *kwargs.values()], depth=4)
        objects = codec.Objects([*args, *kwargs.values()])  # numbered as the judge numbers them
        try:
            result = functions[name](*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 — the student's function may raise anything
            kind = "NotImplementedError" if isinstance(error, NotImplementedError) else "error"
            where = traceback.format_exception_only(type(error), error)[-1].strip()
            reply(raised=kind, type=type(error).__name__, message=str(error), detail=where)
            continue
        given = [*args, *kwargs.values()]
        same = [i for i, item in enumerate(given) if item is result and not _scalar(item)]
        try:
            after = [codec.encode(t) for t in arguments]  # values and requires_grad, as now
            if same:  # it returned one of its own arguments (e.g. the model it changed in place)
                states = objects.encode_all(arguments)
                reply(argument=same[0], arguments=after, objects=states)
                continue
            encoded = codec.encode(result, arguments, objects=objects)
            reply(result=encoded, arguments=after, objects=objects.encode_all(arguments))
        except codec.NotPlainData as error:
            reply(not_plain=type(result).__name__, why=str(error))
        except Exception as error:  # the grader's own encoding failed: say so, keep serving
            reply(grader_error=f"{type(error).__name__}: {error}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("run")
    runner.add_argument("notebook", type=Path)
    runner.add_argument("plan", type=Path)
    runner.add_argument("--cell-timeout", type=int, required=True)
    commands.add_parser("serve")
    args = parser.parse_args(argv)
    # The judge's channel is a private copy of stdin/stdout; the student's code gets /dev/null
    # for both (its prints are not read) and cannot take the judge's requests by reading stdin.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    functions: dict[str, Any] = {}
    if args.command == "run":
        plan = json.loads(args.plan.read_text(encoding="utf-8"))
        functions = run(args.notebook, plan, args.cell_timeout)
    serve(functions, requests, replies)


if __name__ == "__main__":
    main()
