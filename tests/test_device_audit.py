"""The device audit (issue 16): every tensor course_lib creates says where it lives.

A tensor made with ``torch.zeros(3)`` lands on the CPU; next to a model on a GPU that is a
device-mismatch crash waiting for a learner with a Colab GPU runtime. So every creation call in
``course_lib`` — ``torch.zeros/ones/empty/full/arange/tensor/rand/randn/randint/randperm/eye/
linspace`` — either passes ``device=`` or carries a comment, on its line, the line above or any
line of the call, saying why the CPU is right or how the tensor reaches the device:
``# CPU by design: <why>`` or ``# device: <how>``. (``*_like`` calls inherit their argument's
device, ``torch.as_tensor`` keeps a tensor's, and ``torch.rand(...).to(device)`` places it
right there; all are fine.) The scanner reads the code with ``ast``, so multi-line calls count.

Two packages are exempt as a whole. :mod:`course_lib.exercises`: its checkers build small
example inputs on the CPU by design, call the learner's function on them and compare with a CPU
reference; the lessons call ``check(...)`` without a device, so nothing there meets a GPU model.
:mod:`course_lib.smpc`: the engine keeps every ring tensor on the CPU by design (its docstring
says why) and copies real values there where they enter; ``tests/smpc/test_device.py`` checks it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

COURSE_LIB = Path(__file__).resolve().parent.parent / "course_lib"

#: torch functions that create a tensor on the default device (the CPU) unless told otherwise.
CREATORS = frozenset({
    "zeros", "ones", "empty", "full", "arange", "tensor", "eye", "linspace",
    "rand", "randn", "randint", "randperm",
})  # fmt: skip

#: A reason, not just a marker: "# CPU by design: ..." or "# device: ...".
EXEMPTION = re.compile(r"#.*\b(CPU by design|device)\s*:\s*\S")

#: Sub-packages of course_lib exempt as a whole, with the reason (see the module docstring).
EXEMPT_PACKAGES = {
    "exercises": "checkers run the learner's function on CPU examples by design",
    "smpc": "the SMPC engine keeps ring tensors on the CPU by design (course_lib.smpc)",
}


def _names_a_device(to_call: ast.Call) -> bool:
    """Whether ``x.to(...)`` is given a device, not only a dtype (``torch.float64``, ``dtype``)."""
    if any(keyword.arg == "device" for keyword in to_call.keywords):
        return True
    if not to_call.args:
        return False
    first = to_call.args[0]
    if isinstance(first, ast.Attribute) and isinstance(first.value, ast.Name):
        return first.value.id != "torch"  # torch.float64 is a dtype; model.device is not
    return not (isinstance(first, ast.Name) and "dtype" in first.id)


def unplaced_tensor_calls(source: str) -> list[tuple[int, str]]:
    """``(line, call)`` of every ``torch.<creator>(...)`` in ``source`` without ``device=`` and
    without an exemption comment (see the module docstring), in line order."""
    lines = source.splitlines()
    tree = ast.parse(source)
    moved = {  # torch.<creator>(...).to(<a device>): placed on the spot
        id(node.func.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "to"
        and _names_a_device(node)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in moved or not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch"
            and node.func.attr in CREATORS
        ):
            continue
        if any(keyword.arg == "device" for keyword in node.keywords):
            continue
        first, last = node.lineno, node.end_lineno or node.lineno
        nearby = lines[max(first - 2, 0) : last]  # the line above through the call's last line
        if not any(EXEMPTION.search(line) for line in nearby):
            found.append((first, f"torch.{node.func.attr}"))
    return sorted(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = torch.zeros(3)\n", [(1, "torch.zeros")]),
        ("x = torch.zeros(3, device=y.device)\n", []),
        ("x = torch.zeros_like(y)\n", []),
        ("x = torch.tensor(1)  # CPU by design: a Python constant for int64 masks\n", []),
        ("# device: moved to the model's device by the caller's .to(...)\nx = torch.ones(2)\n", []),
        ("x = torch.ones(2)  # CPU\n", [(1, "torch.ones")]),  # a marker without a reason
        ("x = torch.randn(\n    3,\n    generator=g,\n)\n", [(1, "torch.randn")]),
        ("x = torch.randn(\n    3,\n    device=d,\n)\n", []),
        ("x = torch.arange(\n    3,  # CPU by design: indices for a CPU tensor\n)\n", []),
        ("y = 1\n\n# CPU by design: two lines above does not count\n\nx = torch.eye(2)\n",
         [(5, "torch.eye")]),
        ("x = np.zeros(3)\nt = torch.Tensor(2)\nz = self.torch.zeros(1)\n", []),
        ("x = torch.as_tensor(values)\ny = torch.zeros_like(x)\n", []),
        ("x = torch.rand(3, generator=g).to(device)\ny = torch.rand(3).to()\n",
         [(2, "torch.rand")]),
        ("x = (torch.rand(3) - 0.5).to(device)\n", [(1, "torch.rand")]),  # not the call moved
        ("a = torch.zeros(2).to(torch.float64)\nb = torch.zeros(2).to(dtype)\n"
         "c = torch.zeros(2).to(x.device)\nd = torch.zeros(2).to(torch.float64, device=d)\n",
         [(1, "torch.zeros"), (2, "torch.zeros")]),  # a dtype cast is no placement
        ("a = torch.rand(2)\nb = torch.randperm(4, generator=g)\n",
         [(1, "torch.rand"), (2, "torch.randperm")]),
    ],
)  # fmt: skip
def test_the_scanner_finds_bare_creation_calls_and_honours_reasons(source, expected):
    assert unplaced_tensor_calls(source) == expected


def test_every_tensor_course_lib_creates_says_where_it_lives():
    files = sorted(
        path
        for path in COURSE_LIB.rglob("*.py")
        if path.relative_to(COURSE_LIB).parts[0] not in EXEMPT_PACKAGES
    )
    assert len(files) > 30  # the scan really reads the package
    hits = [
        f"{path.relative_to(COURSE_LIB.parent)}:{line}: {call}"
        for path in files
        for line, call in unplaced_tensor_calls(path.read_text(encoding="utf-8"))
    ]
    assert not hits, (
        "tensor creation without device= or a '# CPU by design: why' / '# device: how' comment:\n"
        + "\n".join(hits)
    )
