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

from course_lib.paths import offline

__all__ = ["SUPPORTED_PYTHON", "env_report", "python_support"]

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
            "supported, except Flower's simulation in lesson 10: ray has no Windows wheel for "
            "Python 3.13 (use 3.12, WSL or Colab for that cell)"
        )
    return "supported"


def env_report(*, show: bool = True) -> dict[str, str]:
    """Collect (and by default print) Python, platform, library versions, device and data source."""
    import torch

    from course_lib.data import mnist_source

    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    elif torch.backends.mps.is_available():
        device = "mps (Apple silicon)"
    else:
        device = f"cpu ({os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads)"
    report = {
        "python": f"{sys.version.split()[0]} ({python_support()})",
        "platform": f"{platform.system()} {platform.machine()}",
        "in Colab": str("google.colab" in sys.modules),
        "device": device,
        "offline mode": f"{offline()} (COURSE_OFFLINE={os.environ.get('COURSE_OFFLINE', '')!r})",
        "MNIST source": mnist_source(),
    }
    report.update({package: _version(package) for package in COURSE_LIBRARIES})
    if show:
        width = max(map(len, report))
        for key, value in report.items():
            print(f"{key:>{width}} : {value}")
    return report
