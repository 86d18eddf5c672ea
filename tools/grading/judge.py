"""Judge one submission's answers — in the grader's own process, never running student code.

The notebook ran in the sandbox (:mod:`tools.grading.execute`), which left one record per exercise
in the submission's scratch folder. A *value* answer is read as plain data (:mod:`tools.grading.
codec`: JSON, no pickle) and handed to the course's own checker. A *function* answer never leaves
the sandbox: a fresh sandboxed *callee* loads it, and the judge gives the course checker and the
hidden cases (:mod:`tools.grading.hidden`) a :class:`RemoteFunction` that, when called, sends the
judge's inputs in, has the learner's function called on them there, and brings back only its
result and its arguments' new contents as plain data. So no student code runs in this process,
and nothing of the judge — expected values, the reference solutions, the seed — is reachable from
the student's code: the callee gets the inputs of one call, and only for that call.

An answer passes when it is of the right kind (a function for a function exercise, plain data for
a value), the course checker accepts it, and its hidden cases pass. Each function exercise has a
time limit; a function that runs past it, or kills the callee, fails that exercise only (a fresh
callee judges the next one). An answer that *is* a function imported from a module (e.g.
``rr_epsilon = randomized_response_epsilon``, the course's own implementation) is detected from
the pickle's opcodes (never unpickled here) and scored by the ``library_answers`` rule.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import pickle
import pickletools
import selectors
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from course_lib.exercises import Incorrect
from course_lib.exercises._registry import (
    FUNCTION_RETURNED_NONE,
    Exercise,
    WatchedFunction,
    _lookup,
    run_checker,
)
from course_lib.smpc.communication import CommunicationLog, Cost, Input, Opening, Output
from tools.grading import codec
from tools.grading.hidden import HIDDEN
from tools.grading.sandbox import Sandbox, UnsafeFile, read_scratch_file

__all__ = [
    "LIBRARY_RULES",
    "FunctionStopped",
    "GraderError",
    "RemoteFunction",
    "Verdict",
    "imported_function",
    "judge_all",
]

#: How an answer that is an imported function (the course's own implementation) is scored:
#: ``zero`` — no mark, whatever it returns; ``judge`` — judged like any answer. Both report it.
LIBRARY_RULES = ("zero", "judge")
#: How long a fresh callee may take to start (import torch, load the answers): not counted
#: against any exercise's time limit.
STARTUP_SECONDS = 300
#: The largest answer record read from a submission.
MAX_RECORD_BYTES = 64 * 2**20


class GraderError(Exception):
    """The grader itself failed (a reference solution raised, an input could not be sent): a
    fault of the grader, not of the answer."""


class FunctionStopped(BaseException):
    """The learner's function ran past its time limit or killed the callee. A BaseException, so
    no checker's ``except Exception`` swallows it."""


@dataclass
class Verdict:
    """One exercise's result: ``passed``, the reason shown to the student, and a note for the
    instructor (``problems`` column), if any."""

    passed: bool
    reason: str
    note: str = ""
    #: the course checker refused it: the feedback adds the checker's nudge, as ``check`` does
    nudge: bool = False


class Callee:
    """The sandboxed process that holds one submission's functions and calls them for the judge.

    ``first`` is the command that runs the notebook and then serves (:mod:`tools.grading.execute`
    ``run``); after it is stopped, ``then`` starts a fresh one that loads the functions copied out
    of the notebook (``serve``). Each says ``ready`` before taking requests."""

    def __init__(self, sandbox: Sandbox, first: list[str], then: list[str]) -> None:
        self.sandbox, self.first, self.then = sandbox, first, then
        self.process: subprocess.Popen[bytes] | None = None
        self.deadline = float("inf")
        self.started = 0
        self._buffer = b""
        self._stderr: Any = None

    def start(self) -> None:
        """Start ``first`` (or ``then`` after the first) and wait for it to be ready.
        FunctionStopped past ``deadline`` or if it dies first."""
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 — closed by close()
        self.process = subprocess.Popen(
            self.first if self.started == 0 else self.then,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,
        )
        self.started += 1
        self._buffer = b""
        reply = self._reply()
        if reply.get("ready") is not True:
            self.stop()
            raise FunctionStopped("garbled its reply to the grader")

    def last_error_line(self) -> str:
        """The last line the process wrote to stderr (for "could not be run" messages)."""
        if self._stderr is None:
            return "no message"
        self._stderr.seek(max(0, self._stderr.seek(0, os.SEEK_END) - 2000))
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no message"

    def stop(self) -> int | None:
        """Kill the process and everything it started (the sandbox's PID namespace ends with it);
        its exit status, or None if it was still running."""
        if self.process is None:
            return None
        status = self.process.poll()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        self.process = None
        return status

    def close(self) -> None:
        """Stop the process and drop its stderr."""
        self.stop()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send ``message``; its JSON reply. FunctionStopped past ``deadline`` or if it died."""
        try:
            frame = pickle.dumps(message)
        except Exception as error:
            raise GraderError(
                f"could not send the input ({type(error).__name__}: {error})"
            ) from error
        if self.process is None:  # a fresh one: its start-up is not the function's time
            began, deadline = time.monotonic(), self.deadline
            self.deadline = began + STARTUP_SECONDS
            self.start()
            self.deadline = deadline + (time.monotonic() - began)
        process = self.process
        assert process is not None and process.stdin is not None
        try:
            process.stdin.write(struct.pack("!Q", len(frame)) + frame)
            process.stdin.flush()
        except OSError:
            pass  # it died: the read below says how
        return self._reply()

    def _reply(self) -> dict[str, Any]:
        process = self.process
        assert process is not None and process.stdout is not None
        fd = process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = self.deadline - time.monotonic()
                wait = None if left == float("inf") else max(left, 0.0)
                if left <= 0 or not selector.select(timeout=wait):
                    self.stop()
                    raise FunctionStopped("ran past the time limit")
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    self.stop()
                    raise FunctionStopped("killed the process running it")
                self._buffer += chunk
                if len(self._buffer) > MAX_RECORD_BYTES:
                    self.stop()
                    raise FunctionStopped("sent more data than the grader reads")
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            self.stop()
            raise FunctionStopped("garbled its reply to the grader")
        return reply


def _exception(type_name: str, message: str) -> Exception:
    """The learner's exception as the judge can raise it: a built-in exception type by its name
    (so a checker expecting ValueError sees one), else a plain Exception subclass of that name."""
    found = getattr(builtins, type_name, None)
    if isinstance(found, type) and issubclass(found, Exception):
        with contextlib.suppress(Exception):
            return found(message)
    return type(type_name, (Exception,), {"__str__": lambda self: message})()


class RemoteFunction:
    """The learner's function as the checkers see it: calling it calls the real one inside the
    sandbox on these arguments and returns its result (plain data); tensors it changed in place
    are changed here too, and a result sharing memory with an argument is a view of it here."""

    #: run_checker watches it for None results like a plain function
    learner_function = True

    def __init__(self, callee: Callee, exercise: str, variable: str) -> None:
        self.callee, self.exercise, self.__name__ = callee, exercise, variable

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        message = {"op": "call", "exercise": self.exercise, "args": args, "kwargs": kwargs}
        message["files"] = _files_of([*args, *kwargs.values()])
        logs = [
            item
            for item in codec.Objects([*args, *kwargs.values()]).items
            if isinstance(item, CommunicationLog)
        ]
        pads = [_pad(log) for log in logs]
        try:
            return self._call(message, args, kwargs)
        finally:
            for log, pad in zip(logs, pads, strict=True):
                _unpad(log, pad)

    def _call(self, message: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        objects = codec.Objects([*args, *kwargs.values()])  # numbered before the call, as there
        reply = self.callee.request(message)
        if "raised" in reply:
            if reply["raised"] == "NotImplementedError":
                raise NotImplementedError(str(reply.get("message", "")))
            raise _exception(str(reply.get("type", "Exception")), str(reply.get("message", "")))
        positional = [*args, *kwargs.values()]
        if "argument" in reply:  # it returned one of its own arguments (e.g. the model it trained)
            index = reply["argument"]
            if type(index) is not int or not 0 <= index < len(positional):
                raise Incorrect(f"{self.__name__}(...) returned data the grader cannot read")
            result_is_argument: Any = positional[index]
        if "grader_error" in reply:
            raise GraderError(f"reading the result failed ({reply['grader_error']})")
        if "not_plain" in reply:
            raise Incorrect(
                f"{self.__name__}(...) returned a {reply['not_plain']}; answers must be numbers, "
                "tensors, arrays or lists of them"
            )
        arguments = codec.tensors_in(positional, depth=4)
        try:
            objects.apply(reply.get("objects", []), arguments)
            if "argument" in reply:
                result = result_is_argument
            else:
                result = codec.decode(reply.get("result"), arguments, objects=objects)
            after = reply.get("arguments")
            if not isinstance(after, list) or len(after) != len(arguments):
                raise ValueError("wrong number of arguments")
            changed = [codec.decode(item) for item in after]
        except codec.Tampered as tampering:
            raise Incorrect(
                f"{self.__name__}(...) tampered with the grader's objects: {tampering}; an "
                "honest protocol run only adds to the session's communication log, so this "
                "answer is refused"
            ) from tampering
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as error:
            raise Incorrect(f"{self.__name__}(...) returned data the grader cannot read") from error
        for tensor, new in zip(arguments, changed, strict=True):
            if not isinstance(new, torch.Tensor) or new.shape != tensor.shape:
                raise Incorrect(f"{self.__name__}(...) changed the shape of an argument in place")
            with torch.no_grad():
                if not torch.equal(new.to(tensor.dtype), tensor.detach()):
                    tensor.copy_(new)
            if tensor.is_leaf and tensor.requires_grad != new.requires_grad:
                tensor.requires_grad_(new.requires_grad)
        return result


#: What the judge adds to each communication log a call's arguments hold, for the call only: the
#: sandbox gets a log that is never empty, so a function that resets it, clears one of its lists
#: or zeroes a counter there (to hide a peek from the audit) sends back a log that shrank, and the
#: answer is refused (:class:`codec.Tampered`). Taken off again before any checker reads the log.
_PAD = Cost(rounds=1, bytes=1, offline_bytes=1)


def _pad(log: CommunicationLog) -> tuple[Output, Opening, Input]:
    entries = (
        Output("grader", "grader", 0),
        Opening("grader", "additive", ((0,),)),
        Input("grader", "grader", 0),
    )
    log.total = log.total + _PAD
    log.share_reads += 1
    log.outputs.append(entries[0])
    log.openings.append(entries[1])
    log.inputs.append(entries[2])
    return entries


def _unpad(log: CommunicationLog, entries: tuple[Output, Opening, Input]) -> None:
    """Take :func:`_pad`'s additions off again (also after a refused or failed call)."""
    log.total = log.total - _PAD
    log.share_reads -= 1
    for name, entry in zip(("outputs", "openings", "inputs"), entries, strict=True):
        setattr(log, name, [item for item in getattr(log, name) if item is not entry])


def _files_of(arguments: list[Any]) -> dict[str, dict[str, bytes | None]]:
    """The folders and files a checker passes as ``pathlib.Path`` arguments (also inside a
    list/tuple/dict): ``{path: {relative name: bytes, or None for a folder}}``, so the callee can
    recreate them at the same place in its own ``/tmp``. GraderError for a path outside the
    temporary folder (the sandbox cannot recreate it) or more than MAX_RECORD_BYTES of files."""
    found: dict[str, dict[str, bytes | None]] = {}
    pending = list(arguments)
    while pending:
        item = pending.pop()
        if isinstance(item, list | tuple):
            pending += item
        elif isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, Path) and item.exists():
            root = item.resolve()
            if not root.is_relative_to(Path(tempfile.gettempdir()).resolve()):
                raise GraderError(f"{item} is outside {tempfile.gettempdir()}")
            entries: dict[str, bytes | None] = {}
            for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
                entries[str(path.relative_to(root))] = None if path.is_dir() else path.read_bytes()
            found[str(root)] = entries
    if (
        sum(len(v or b"") for entries in found.values() for v in entries.values())
        > MAX_RECORD_BYTES
    ):
        raise GraderError("the checker's files are larger than the grader sends")
    return found


def imported_function(pickled: bytes) -> str | None:
    """``module.name`` when ``pickled`` (cloudpickle's bytes of an answer) is just a reference to
    an importable function — an alias such as ``rr_epsilon = randomized_response_epsilon`` —
    else None. Reads the opcodes only; nothing is unpickled."""
    strings: list[str] = []
    globals_: list[str] = []
    try:
        for opcode, argument, _ in pickletools.genops(pickled):
            if opcode.name in ("PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "STOP"):
                continue
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(argument))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                globals_.append(f"{strings[-2]}.{strings[-1]}")
            elif opcode.name == "GLOBAL":
                globals_.append(str(argument).replace(" ", "."))
            else:
                return None
    except Exception:
        return None
    return globals_[0] if len(globals_) == 1 else None


def _record(scratch: Path, name: str) -> dict[str, Any] | None:
    try:
        raw = read_scratch_file(scratch, f"answers/{name}.json", MAX_RECORD_BYTES)
    except UnsafeFile as error:
        return {"unreadable": str(error)}
    if raw is None:
        return None
    try:
        record = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        return {"unreadable": str(error)}
    return record if isinstance(record, dict) else {"unreadable": "not a record"}


def _judge_value(exercise: dict[str, Any], record: dict[str, Any], registered: Exercise) -> Verdict:
    variable = exercise["answer"]
    if "kind" in record:
        return Verdict(False, f"`{variable}` is a {record['kind']}, not a number, tensor or array")
    try:
        answer = codec.decode(record.get("value"))
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as error:
        return Verdict(False, f"your answer could not be read ({error})")
    if answer is Ellipsis:
        return Verdict(False, "not answered (`...`)")
    try:
        run_checker(registered, answer)
    except Incorrect as wrong:
        return Verdict(False, str(wrong), nudge=True)
    except Exception as error:
        return Verdict(False, f"your answer raised {type(error).__name__}: {error}")
    return Verdict(True, "correct")


def _judge_function(
    exercise: dict[str, Any],
    record: dict[str, Any],
    registered: Exercise,
    reference: Callable[..., Any] | None,
    callee: Callee,
    seed: int,
    library_answers: Literal["zero", "judge"],
) -> Verdict:
    name, variable = exercise["name"], exercise["answer"]
    if "kind" in record:
        return Verdict(False, f"`{variable}` should be a function, got {record['kind']}")
    if "value" in record:
        return Verdict(False, "not answered (`...`)")
    try:
        pickled = read_scratch_file(callee.sandbox.scratch, f"answers/{name}.pkl", MAX_RECORD_BYTES)
    except UnsafeFile as error:
        return Verdict(False, f"your answer could not be read ({error})")
    if pickled is None:
        return Verdict(False, f"your answer could not be read (answers/{name}.pkl is missing)")
    imported = imported_function(pickled)
    note = ""
    if imported is not None:
        note = f"{name} answered with `{imported}`, a function it imported"
        if library_answers == "zero":
            return Verdict(
                False,
                f"your answer is `{imported}` itself, not a function you wrote: no mark "
                "(graded with --library-answers zero)",
                note,
            )
    load = callee.request({"op": "load", "exercise": name})
    if "error" in load:
        return Verdict(False, f"your answer could not be loaded ({load['error']})", note)
    learner = RemoteFunction(callee, name, variable)
    case = HIDDEN.get(name)
    try:
        run_checker(registered, learner)
        if case is not None and reference is not None:
            watched = WatchedFunction(learner)
            try:
                case(watched, _trusted(reference), torch.Generator().manual_seed(seed))
            except Incorrect as wrong:
                return Verdict(False, f"hidden test: {wrong}", note, nudge=True)
            except (TypeError, ValueError, AttributeError) as error:
                if not watched.returned_none:
                    raise
                raise Incorrect(FUNCTION_RETURNED_NONE) from error
    except Incorrect as wrong:
        return Verdict(False, str(wrong), note, nudge=True)
    except NotImplementedError:
        return Verdict(False, "not implemented (`raise NotImplementedError`)", note)
    except GraderError as error:
        return Verdict(False, f"not judged: grader error ({error})", f"{name}: grader error")
    except Exception as error:  # the learner's function raised (re-raised here by name)
        return Verdict(False, f"your answer raised {type(error).__name__}: {error}", note)
    suffix = " (course check and hidden tests)" if case is not None else ""
    if imported is not None:
        suffix += f"; it is `{imported}`, counted under --library-answers judge"
    return Verdict(True, "correct" + suffix, note)


def _trusted(reference: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return reference(*args, **kwargs)
        except Exception as error:
            raise GraderError(f"{type(error).__name__}: {error}") from error

    return call


def judge_all(
    plan: list[dict[str, Any]],
    references: dict[str, Callable[..., Any]],
    callee: Callee,
    *,
    seed: int,
    function_timeout: float,
    library_answers: Literal["zero", "judge"] = "zero",
) -> Iterator[tuple[str, Verdict]]:
    """Judge every exercise of ``plan`` from the records in ``callee.sandbox.scratch``:
    ``(name, verdict)`` in turn. Each function exercise gets ``function_timeout`` seconds of the
    callee's time (all its calls together); running past it or killing the callee fails that
    exercise only."""
    try:
        for exercise in plan:
            name, variable = exercise["name"], exercise["answer"]
            record = _record(callee.sandbox.scratch, name)
            registered = _lookup(name)
            if record is None or record.get("missing"):
                verdict = Verdict(
                    False, f"no answer: `{variable}` was not defined when its check cell ran"
                )
            elif "unreadable" in record:
                verdict = Verdict(False, f"your answer could not be read ({record['unreadable']})")
            elif not exercise["function"]:
                verdict = _judge_value(exercise, record, registered)
            else:
                callee.deadline = time.monotonic() + function_timeout
                try:
                    verdict = _judge_function(
                        exercise,
                        record,
                        registered,
                        references.get(name),
                        callee,
                        seed,
                        library_answers,
                    )
                except FunctionStopped as stopped:
                    what = str(stopped)
                    if what == "ran past the time limit":
                        what = f"ran past this exercise's {function_timeout:g} s limit"
                    verdict = Verdict(False, f"your function {what}; no other exercise is affected")
                finally:
                    callee.deadline = float("inf")
            if verdict.nudge:
                verdict.reason += f" — nudge: {registered.nudge}"
            yield name, verdict
    finally:
        callee.close()
