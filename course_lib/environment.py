"""A short report of the learner's environment, printed at the top of lesson 00.

When something goes wrong, this is the first thing to paste into a question: it says which Python
(and whether the course supports it), which library versions, which device and which data source
the course will use.

torch and the data module are imported only when the report is made, so ``import course_lib``
(which exposes :func:`env_report`) stays quick for tools that need only ``course_lib.paths``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import TYPE_CHECKING

from course_lib.paths import offline

if TYPE_CHECKING:
    import torch

__all__ = ["SUPPORTED_PYTHON", "env_report", "lesson_device", "python_support"]

#: The Python versions the course is tested on, oldest and newest (pyproject.toml's classifiers;
#: tests/test_packaging.py keeps them equal). Colab's default runtime is 3.13.
SUPPORTED_PYTHON = ((3, 11), (3, 13))

#: Libraries the course uses, in the order the parts introduce them.
COURSE_LIBRARIES = (
    "torch", "torchvision", "numpy", "matplotlib", "mlxtend",
    "opacus", "syft", "syft-rds", "flwr", "ray", "tenseal", "phe", "gmpy2",
)  # fmt: skip


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def python_support(version: tuple[int, int] | None = None, system: str | None = None) -> str:
    """Whether the course supports Python ``version`` (default: this one) on ``system`` (default:
    this one, as ``platform.system()`` names it), in words."""
    version = version or sys.version_info[:2]
    system = system or platform.system()
    oldest, newest = SUPPORTED_PYTHON
    supported = f"{oldest[0]}.{oldest[1]}–{newest[0]}.{newest[1]}"
    if not oldest <= version <= newest:
        return f"not supported (the course supports Python {supported})"
    if system == "Windows" and version >= (3, 13):
        return (
            "supported, except Flower's simulation runtime (lesson 13's Flower run, lesson 10's "
            "optional one): ray has no Windows wheel for Python 3.13 (use 3.12, WSL or Colab)"
        )
    return "supported"


#: Set to ``cpu``, ``cuda`` (or ``cuda:N``) or ``mps`` to choose the lessons' device yourself.
DEVICE_VARIABLE = "COURSE_DEVICE"


def lesson_device() -> torch.device:
    """The device the lessons train on: CUDA when PyTorch sees a GPU, otherwise the CPU.

    A Colab GPU runtime or a laptop with an NVIDIA GPU is used without editing a lesson. Apple's
    ``mps`` is used only when asked for (``COURSE_DEVICE=mps``): it lacks float64, which the DP
    accountants and the fixed-point encoders use. ``COURSE_DEVICE`` (``cpu``, ``cuda``, ``cuda:N``
    or ``mps``, any case) overrides the choice; CI and the stored outputs run on the CPU. The
    secure-computation engine (:mod:`course_lib.smpc`) stays on the CPU whatever this returns.

    Raises:
        ValueError: ``COURSE_DEVICE`` is not a device name, names a kind of device the course does
            not train on (``meta``, ``xla``, ...), or names a device this machine does not have.
    """
    import torch

    requested = os.environ.get(DEVICE_VARIABLE, "").strip()
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested.lower())
    except RuntimeError as error:
        raise ValueError(
            f"{DEVICE_VARIABLE}={requested!r} is not a device name; use {_CHOICES}"
        ) from error
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"{DEVICE_VARIABLE}={requested!r}: the lessons train on the CPU or a GPU; "
            f"use {_CHOICES}"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        build = (
            "this PyTorch is a CPU-only build"
            if torch.version.cuda is None
            else f"PyTorch (built for CUDA {torch.version.cuda}) finds no usable NVIDIA GPU"
        )
        raise ValueError(
            f"{DEVICE_VARIABLE}={requested!r}, but {build}; unset {DEVICE_VARIABLE} (or set it "
            "to cpu) to train on the CPU"
        )
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            raise ValueError(
                f"{DEVICE_VARIABLE}={requested!r}, but this machine has {count} CUDA GPU(s), "
                f"numbered 0 to {count - 1}"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"{DEVICE_VARIABLE}={requested!r}, but Apple's mps is not available here (it needs "
            f"Apple silicon and macOS 12.3+); unset {DEVICE_VARIABLE} to let the course choose"
        )
    return device


_CHOICES = "cpu, cuda, cuda:0 or mps"


def _device_description() -> str:
    """The device the lessons train on, and why, in words; a bad ``COURSE_DEVICE`` is reported
    (the error :func:`lesson_device` raises, in words) rather than raised, so that lesson 00's
    report still shows everything else."""
    import torch

    try:
        device = lesson_device()
    except ValueError as error:
        return f"not chosen: {error} (every lesson that trains raises this error until it is fixed)"
    chosen = f"set by {DEVICE_VARIABLE}" if os.environ.get(DEVICE_VARIABLE, "").strip() else ""
    if device.type == "cuda":
        why = chosen or "a CUDA GPU was found"
        return f"lessons train on {device} ({torch.cuda.get_device_name(device)}; {why})"
    if device.type == "mps":
        return f"lessons train on mps (Apple silicon; {chosen})"
    why = chosen or "no CUDA GPU found"
    threads = torch.get_num_threads()
    cpu = f"lessons train on cpu ({why}; {os.cpu_count()} cores, torch uses {threads} thread"
    cpu += "s)" if threads != 1 else ")"
    if not chosen and torch.backends.mps.is_available():
        return f"{cpu}; Apple's mps is available (set {DEVICE_VARIABLE}=mps to try it)"
    return cpu


def env_report(*, show: bool = True) -> dict[str, str]:
    """Collect (and by default print) Python, platform, library versions, device and data source.

    Never raises for a misconfigured ``COURSE_DEVICE``: the ``device`` entry then carries the
    message :func:`lesson_device` raises."""

    from course_lib.data import mnist_source

    report = {
        "python": f"{sys.version.split()[0]} ({python_support()})",
        "platform": f"{platform.system()} {platform.machine()}",
        "in Colab": str("google.colab" in sys.modules),
        "device": _device_description(),
        "offline mode": f"{offline()} (COURSE_OFFLINE={os.environ.get('COURSE_OFFLINE', '')!r})",
        "MNIST source": mnist_source(),
    }
    report.update({package: _version(package) for package in COURSE_LIBRARIES})
    if show:
        width = max(map(len, report))
        for key, value in report.items():
            print(f"{key:>{width}} : {value}")
    return report
