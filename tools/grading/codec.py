"""Plain data across the sandbox wall: answers and function results as JSON, never pickle.

Everything a submission produces reaches the judge through :func:`encode` (run inside the sandbox)
and :func:`decode` (run by the judge). :func:`decode` builds only the types below, from JSON, so a
submission cannot make the judge run any code of its own:

- ``None``, ``bool``, ``int``, ``float`` (also ``nan``/``inf``), ``complex``, ``str``, ``bytes``,
  ``fractions.Fraction``, ``pathlib.Path`` (a name, not a file), ``Ellipsis`` (an unanswered
  exercise);
- ``list``, ``tuple``, ``dict``, ``set``, ``frozenset`` of those (nested at most :data:`MAX_DEPTH`);
- ``torch.Tensor`` and ``numpy.ndarray`` of a numeric or bool dtype, numpy scalars, ``torch.Size``;
- an *alias*: a tensor result that shares memory with one of the function's own tensor arguments
  (the judge hands back a view of its own argument, so "does the copy share memory?" can be asked);
- in a function's reply only (with an :class:`Objects` table): objects of the course's own classes
  that a call's arguments hold or that it returns — a ``SharedTensor`` and the ``Session`` whose
  communication log the call wrote to — as their attributes' plain data and references to other
  such objects. The judge updates its own argument objects in place and makes a returned object
  only of a class of :data:`OBJECT_CLASSES` (``__new__``, then its attributes: no ``__init__``, no
  other code), so an SMPC answer is judged on the judge's own session, with the course's own
  methods.

Anything else (objects of the submission's classes, an object whose ``==`` always says yes, modules,
functions) is refused by :func:`encode` with :class:`NotPlainData`. This module is also bound
read-only into the sandbox; it holds no secrets.
"""

from __future__ import annotations

import base64
import fractions
import importlib
import math
import pathlib
from typing import Any

import numpy as np
import torch

__all__ = [
    "MAX_DEPTH",
    "OBJECT_CLASSES",
    "MUTABLE_ATTRIBUTES",
    "NotPlainData",
    "OBJECT_CLASSES_ATTRIBUTES",
    "Objects",
    "Tampered",
    "decode",
    "encode",
    "tensors_in",
]

#: Containers nested deeper than this are not plain data.
MAX_DEPTH = 20
_TORCH_DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
    )
}
_NUMPY_KINDS = set("biufc")
#: The course classes a reply may make new objects of (a function's SharedTensor result, the log
#: entries of its protocol); objects of other course classes are only updated, never made.
OBJECT_CLASSES = frozenset(
    {
        "course_lib.smpc.tensor:SharedTensor",
        "course_lib.smpc.communication:Cost",
        "course_lib.smpc.communication:Output",
        "course_lib.smpc.communication:Opening",
        "course_lib.smpc.communication:Input",
    }
)


class NotPlainData(TypeError):
    """A value that may not cross the sandbox wall (see the module docstring)."""


def tensors_in(value: Any, depth: int = 3) -> list[torch.Tensor]:
    """The tensors among a call's arguments, in a fixed order: ``value`` itself, the items of
    lists/tuples/dicts (to ``depth`` levels), a module's parameters and buffers. Both sides of the
    wall walk equal arguments in the same order, so an alias is an index into this list."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, torch.nn.Module):
        return [*value.parameters(), *value.buffers()]
    if depth > 0 and isinstance(value, list | tuple):
        return [t for item in value for t in tensors_in(item, depth - 1)]
    if depth > 0 and isinstance(value, dict):
        return [t for item in value.values() for t in tensors_in(item, depth - 1)]
    return []


def _course_object(value: Any) -> bool:
    """An object of one of the course's own classes, with attributes (not a module, a function, a
    class or a torch module — those never cross)."""
    cls = type(value)
    return (
        cls.__module__.startswith("course_lib.")
        and hasattr(value, "__dict__")
        and not isinstance(value, type | torch.nn.Module)
        and not callable(value)
    )


def _class_name(value: Any) -> str:
    return _class_name_of(type(value))


def _class_name_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class Objects:
    """The course objects one call works on, numbered alike on both sides of the wall: built from
    the call's arguments *before* the call (equal arguments, equal walk, equal numbers); objects a
    call makes get the next numbers as :func:`encode` meets them. ``states`` (filled by
    :func:`encode`) is what a reply carries; :meth:`apply` brings it into the judge's objects."""

    def __init__(self, roots: list[Any]) -> None:
        self.items: list[Any] = []
        self.ids: dict[int, int] = {}
        self.states: dict[int, Any] = {}
        self._number(roots, MAX_DEPTH)
        self.before = len(self.items)

    def _number(self, value: Any, depth: int) -> None:
        if depth < 0:
            return
        if _course_object(value):
            if id(value) in self.ids:
                return
            self.ids[id(value)] = len(self.items)
            self.items.append(value)
            for item in vars(value).values():
                self._number(item, depth - 1)
        elif type(value) in (list, tuple, set, frozenset):
            for item in value:
                self._number(item, depth - 1)
        elif type(value) is dict:
            for key, item in value.items():
                self._number(key, depth - 1)
                self._number(item, depth - 1)

    def encode_all(self, arguments: list[torch.Tensor]) -> list[Any]:
        """Every argument object's state, as it is now, and the objects they now refer to: the
        reply's ``objects``."""
        for index in range(self.before):
            encode(self.items[index], arguments, objects=self)
        return [[index, state] for index, state in sorted(self.states.items())]

    def apply(self, data: Any, arguments: list[torch.Tensor] | None = None) -> None:
        """Bring a reply's ``objects`` into the judge's objects. New objects are made (classes of
        :data:`OBJECT_CLASSES` only, with their own attributes only) and referred to. An argument
        object may change only the attributes of :data:`MUTABLE_ATTRIBUTES` (what an honest
        protocol run changes); every other attribute must come back as the judge has it, and a
        :class:`~course_lib.smpc.communication.CommunicationLog` only grows (counters never
        decrease, lists only extend what they held): :class:`Tampered` otherwise, and nothing of
        the judge's is changed. ValueError for anything malformed."""
        _check(type(data) is list and len(data) <= 100_000, "objects")
        states: dict[int, Any] = {}
        for pair in data:
            _check(type(pair) is list and len(pair) == 2 and type(pair[0]) is int, "objects")
            _check(type(pair[1]) is dict and type(pair[1].get("state")) is list, "object")
            states[pair[0]] = pair[1]
        made = sorted(k for k in states if k >= self.before)
        _check(made == list(range(self.before, self.before + len(made))), "object numbers")
        for index in made:
            name = states[index].get("class")
            if name not in OBJECT_CLASSES:
                raise Tampered(f"it made an object of class {name!r}, which no reply may make")
            module, _, qualname = str(name).partition(":")
            cls = getattr(importlib.import_module(module), qualname)
            self.items.append(cls.__new__(cls))
        pending: list[tuple[int, Any, dict[str, Any]]] = []
        for index, body in states.items():
            _check(0 <= index < len(self.items), "object number")
            target = self.items[index]
            _check(body.get("class") == _class_name(target), "object class")
            attributes = {}
            for pair in body["state"]:
                _check(type(pair) is list and len(pair) == 2 and type(pair[0]) is str, "state")
                _check(pair[0].isidentifier() and not pair[0].startswith("__"), "attribute")
                attributes[pair[0]] = decode(pair[1], arguments, MAX_DEPTH, self)
            pending.append((index, target, attributes))
        changes: list[tuple[Any, dict[str, Any]]] = []
        for index, target, attributes in pending:
            name = _class_name(target)
            if index >= self.before:  # made by this reply: its class's own attributes only
                unknown = set(attributes) - OBJECT_CLASSES_ATTRIBUTES[name]
                _check(not unknown, f"attributes {sorted(unknown)} of a {name}")
                for key, value in attributes.items():
                    object.__setattr__(target, key, value)
                continue
            allowed = frozenset().union(
                *(
                    MUTABLE_ATTRIBUTES.get(_class_name_of(c), frozenset())
                    for c in type(target).__mro__
                )
            )
            current = vars(target)
            for key, value in attributes.items():
                if key not in allowed and (key not in current or not _same(current[key], value)):
                    raise Tampered(f"it changed `{key}` of the judge's {type(target).__name__}")
            changes.append((target, {k: v for k, v in attributes.items() if k in allowed}))
        for target, attributes in changes:
            if _class_name(target) == _LOG:
                _check_log_grows(target, attributes)
        for target, attributes in changes:
            for key, value in attributes.items():
                object.__setattr__(target, key, value)


class Tampered(ValueError):
    """A reply that changes what an honest call cannot: an attribute of a judge's object outside
    :data:`MUTABLE_ATTRIBUTES`, or a communication log that shrank."""


_LOG = "course_lib.smpc.communication:CommunicationLog"
_COST = ("rounds", "bytes", "offline_bytes")
#: The attributes a new object of each class of :data:`OBJECT_CLASSES` is made with.
OBJECT_CLASSES_ATTRIBUTES = {
    "course_lib.smpc.tensor:SharedTensor": frozenset({"_shares", "session", "scale_bits"}),
    "course_lib.smpc.communication:Cost": frozenset(_COST),
    "course_lib.smpc.communication:Output": frozenset({"operation", "receiver", "elements"}),
    "course_lib.smpc.communication:Opening": frozenset({"operation", "sharing", "shapes"}),
    "course_lib.smpc.communication:Input": frozenset({"operation", "sender", "elements"}),
}
#: The attributes of an object the call's arguments held that a reply may change: what an honest
#: protocol run changes (the log's records, the random source's position); a subclass may change
#: what its base classes may. Objects of any other class, and any other attribute, come back
#: unchanged or the reply is :class:`Tampered`.
MUTABLE_ATTRIBUTES = {
    _LOG: frozenset({"total", "by_operation", "outputs", "openings", "inputs", "share_reads"}),
    "course_lib.randomness:SecureRandom": frozenset({"_pid", "_used"}),
    "course_lib.randomness:InsecureSeededRandom": frozenset({"_generator"}),
    "course_lib.exercises.smpc:_CountingRandom": frozenset({"drawn"}),  # a checker's own source
}


def _same(old: Any, new: Any) -> bool:
    """``new`` (decoded from a reply) is what the judge holds in ``old``: the very object for a
    course object, equal plain data otherwise."""
    if old is new:
        return True
    if type(old) is not type(new) or _course_object(old):
        return False
    if isinstance(old, torch.Tensor):
        return old.dtype == new.dtype and old.shape == new.shape and bool(torch.equal(old, new))
    if isinstance(old, np.ndarray):
        return old.dtype == new.dtype and bool(np.array_equal(old, new, equal_nan=True))
    if isinstance(old, np.random.Generator):
        return bool(old.bit_generator.state == new.bit_generator.state)
    if isinstance(old, torch.Generator):
        return bool(torch.equal(old.get_state(), new.get_state()))
    if isinstance(old, list | tuple):
        return len(old) == len(new) and all(map(_same, old, new))
    if isinstance(old, dict):
        return old.keys() == new.keys() and all(_same(old[k], new[k]) for k in old)
    if isinstance(old, float) and math.isnan(old):
        return math.isnan(new)
    try:
        return bool(old == new)
    except Exception:
        return False


def _counts(cost: Any, what: str) -> tuple[int, ...]:
    if _class_name(cost) != "course_lib.smpc.communication:Cost":
        raise Tampered(f"it replaced the log's {what} with a {type(cost).__name__}")
    counts = [getattr(cost, key, None) for key in _COST]
    if not all(type(count) is int for count in counts):
        raise Tampered(f"it put a non-integer count into the log's {what}")
    return tuple(int(count) for count in counts if type(count) is int)


def _check_log_grows(log: Any, new: dict[str, Any]) -> None:
    """Tampered unless the log ``new`` describes (attributes not in it: as ``log`` has them) only
    adds to ``log``: every count at least as large, every list an extension of the old one."""
    old_total = _counts(log.total, "total")
    new_total = _counts(new.get("total", log.total), "total")
    if any(b < a for a, b in zip(old_total, new_total, strict=True)):
        raise Tampered("it lowered the communication log's total cost")
    operations = new.get("by_operation", log.by_operation)
    if type(operations) is not dict or not all(type(k) is str for k in operations):
        raise Tampered("it replaced the log's per-operation costs")
    for name, cost in log.by_operation.items():
        if name not in operations:
            raise Tampered(f"it removed {name!r} from the log's per-operation costs")
        old, now = _counts(cost, name), _counts(operations[name], name)
        if any(b < a for a, b in zip(old, now, strict=True)):
            raise Tampered(f"it lowered the log's cost of {name!r}")
    for name in operations:
        _counts(operations[name], name)
    for field, cls in (("outputs", "Output"), ("openings", "Opening"), ("inputs", "Input")):
        old_list, new_list = getattr(log, field), new.get(field, getattr(log, field))
        if type(new_list) is not list or len(new_list) < len(old_list):
            raise Tampered(f"it removed entries from the log's {field}")
        if not all(a is b or a == b for a, b in zip(old_list, new_list, strict=False)):
            raise Tampered(f"it rewrote entries of the log's {field}")
        for entry in new_list[len(old_list) :]:
            if _class_name(entry) != f"course_lib.smpc.communication:{cls}":
                raise Tampered(f"it put a {type(entry).__name__} into the log's {field}")
    reads = new.get("share_reads", log.share_reads)
    if type(reads) is not int or reads < log.share_reads:
        raise Tampered("it lowered the log's count of share reads")


def _float(x: float) -> Any:
    return x if math.isfinite(x) else {"float": repr(x)}


def encode(
    value: Any,
    arguments: list[torch.Tensor] | None = None,
    depth: int = MAX_DEPTH,
    objects: Objects | None = None,
) -> Any:
    """``value`` as JSON-ready data; a tensor sharing memory with one of ``arguments`` becomes an
    alias of it; with ``objects``, a course object becomes a reference to its entry there.
    NotPlainData for anything not listed in the module docstring."""
    if depth < 0:
        raise NotPlainData(f"containers nested deeper than {MAX_DEPTH}")
    cls = type(value)
    if objects is not None and _course_object(value):
        index = objects.ids.get(id(value))
        if index is None:
            index = objects.ids[id(value)] = len(objects.items)
            objects.items.append(value)
        if index not in objects.states:
            objects.states[index] = None  # being encoded: a cycle refers to it, no more
            state = []
            for key, item in vars(value).items():
                try:
                    state.append([key, encode(item, arguments, MAX_DEPTH, objects)])
                except NotPlainData:  # left as the judge has it (a lock, a callback, ...)
                    continue
            objects.states[index] = {"class": _class_name(value), "state": state}
        return {"object": index}
    if objects is not None and cls is np.random.Generator:
        return {"np_generator": encode(value.bit_generator.state, None, 4)}
    if objects is not None and cls is torch.Generator:
        raw = value.get_state().numpy().tobytes()
        return {"torch_generator": base64.b64encode(raw).decode()}
    if value is None or cls in (bool, str):
        return value
    if cls is int:
        return value if abs(value) < 2**53 else {"int": str(value)}
    if cls is float:
        return _float(value)
    if value is Ellipsis:
        return {"ellipsis": True}
    if cls is complex:
        return {"complex": [_float(value.real), _float(value.imag)]}
    if cls is bytes:
        return {"bytes": base64.b64encode(value).decode()}
    if cls is fractions.Fraction:
        return {"fraction": [str(value.numerator), str(value.denominator)]}
    if cls is torch.Size:
        return {"size": list(value)}
    if cls in (pathlib.PosixPath, pathlib.PurePosixPath):
        return {"path": str(value)}
    if cls in (list, tuple, set, frozenset):
        items = [encode(item, arguments, depth - 1, objects) for item in value]
        return {cls.__name__: items}
    if cls is dict:
        pairs = [
            [encode(k, arguments, depth - 1, objects), encode(v, arguments, depth - 1, objects)]
            for k, v in value.items()
        ]
        return {"dict": pairs}
    if isinstance(value, torch.Tensor) and cls in (torch.Tensor, torch.nn.Parameter):
        tensor = value.detach()
        for index, argument in enumerate(arguments or []):
            if tensor.numel() and tensor.untyped_storage().data_ptr() == (
                argument.untyped_storage().data_ptr()
            ):
                return {
                    "alias": index,
                    "size": list(tensor.shape),
                    "stride": list(tensor.stride()),
                    "offset": tensor.storage_offset() - argument.storage_offset(),
                }
        name = str(tensor.dtype).removeprefix("torch.")
        if name not in _TORCH_DTYPES or tensor.layout != torch.strided:
            raise NotPlainData(f"a tensor of dtype {tensor.dtype}")
        flat = torch.empty(tensor.numel(), dtype=tensor.dtype).copy_(tensor.cpu().reshape(-1))
        raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        return {
            "tensor": name,
            "shape": list(tensor.shape),
            "data": base64.b64encode(raw).decode(),
            "grad": bool(value.requires_grad),
        }
    if cls is np.ndarray or isinstance(value, np.generic) and type(value).__module__ == "numpy":
        array = np.asarray(value)
        if array.dtype.kind not in _NUMPY_KINDS:
            raise NotPlainData(f"a numpy array of dtype {array.dtype}")
        kind = "ndarray" if cls is np.ndarray else "npscalar"
        raw = np.ascontiguousarray(array).tobytes()
        return {
            kind: array.dtype.str,
            "shape": list(array.shape),
            "data": base64.b64encode(raw).decode(),
        }
    raise NotPlainData(f"a {cls.__name__}")


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(f"malformed answer data: {what}")


def decode(
    data: Any,
    arguments: list[torch.Tensor] | None = None,
    depth: int = MAX_DEPTH,
    objects: Objects | None = None,
) -> Any:
    """The value :func:`encode` described; an alias is resolved against ``arguments`` (the judge's
    own tensors), an object reference against ``objects`` (after :meth:`Objects.apply`).
    ValueError for anything malformed."""
    _check(depth >= 0, "nested too deep")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is list:  # only a dict's [key, value] pairs are bare lists
        raise ValueError("malformed answer data: a bare list")
    _check(type(data) is dict and len(data) >= 1, "not an object")
    tag = next(iter(data))
    body = data[tag]
    if tag == "ellipsis":
        return Ellipsis
    if tag == "object":
        _check(objects is not None and type(body) is int, "object reference")
        assert objects is not None
        _check(0 <= body < len(objects.items), "object reference")
        return objects.items[body]
    if tag == "np_generator" and objects is not None:
        state = decode(body, None, 4)
        _check(type(state) is dict and type(state.get("bit_generator")) is str, "generator")
        kind = getattr(np.random, state["bit_generator"], None)
        _check(isinstance(kind, type) and issubclass(kind, np.random.BitGenerator), "generator")
        assert isinstance(kind, type)
        generator = np.random.Generator(kind())
        try:
            generator.bit_generator.state = state
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError("malformed answer data: generator state") from error
        return generator
    if tag == "torch_generator" and objects is not None:
        raw = bytearray(base64.b64decode(body, validate=True))
        torch_generator = torch.Generator()
        try:
            torch_generator.set_state(torch.frombuffer(raw, dtype=torch.uint8).clone())
        except RuntimeError as error:
            raise ValueError("malformed answer data: generator state") from error
        return torch_generator
    if tag == "int":
        return int(body)
    if tag == "float":
        _check(body in ("nan", "inf", "-inf"), "a float")
        return float(body)
    if tag == "complex":
        return complex(decode(body[0], None, 1), decode(body[1], None, 1))
    if tag == "bytes":
        return base64.b64decode(body, validate=True)
    if tag == "fraction":
        return fractions.Fraction(int(body[0]), int(body[1]))
    if tag == "size":
        return torch.Size([int(x) for x in body])
    if tag == "path":
        _check(type(body) is str, "path")
        return pathlib.Path(body)
    if tag in ("list", "tuple", "set", "frozenset"):
        _check(type(body) is list, tag)
        items = [decode(item, arguments, depth - 1, objects) for item in body]
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
    if tag == "dict":
        _check(type(body) is list and all(type(p) is list and len(p) == 2 for p in body), "dict")
        return {
            decode(k, arguments, depth - 1, objects): decode(v, arguments, depth - 1, objects)
            for k, v in body
        }
    if tag == "alias":
        _check(arguments is not None and type(body) is int and 0 <= body < len(arguments), "alias")
        assert arguments is not None
        base = arguments[body]
        return base.as_strided(
            [int(x) for x in data["size"]],
            [int(x) for x in data["stride"]],
            base.storage_offset() + int(data["offset"]),
        )
    if tag == "tensor":
        _check(body in _TORCH_DTYPES, "tensor dtype")
        shape = [int(x) for x in data["shape"]]
        raw = bytearray(base64.b64decode(data["data"], validate=True))
        dtype = _TORCH_DTYPES[body]
        count = math.prod(shape)
        _check(len(raw) == count * dtype.itemsize, "tensor size")
        flat = torch.frombuffer(raw, dtype=dtype) if count else torch.empty(0, dtype=dtype)
        tensor = flat.reshape(shape).clone()
        return (
            tensor.requires_grad_()
            if data.get("grad") is True and dtype.is_floating_point
            else tensor
        )
    if tag in ("ndarray", "npscalar"):
        np_dtype = np.dtype(str(body))
        _check(np_dtype.kind in _NUMPY_KINDS, "array dtype")
        np_shape = tuple(int(x) for x in data["shape"])
        np_raw = base64.b64decode(data["data"], validate=True)
        _check(len(np_raw) == math.prod(np_shape) * np_dtype.itemsize, "array size")
        array = np.frombuffer(np_raw, dtype=np_dtype).reshape(np_shape).copy()
        return array if tag == "ndarray" else array[()]
    raise ValueError(f"malformed answer data: unknown tag {tag!r}")
