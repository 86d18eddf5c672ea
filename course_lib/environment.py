"""A short report of the learner's environment, printed at the top of lesson 00.

When something goes wrong, this is the first thing to paste into a question: it says which Python,
which library versions, which device and which data source the course will use.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

import torch

from course_lib.data import mnist_source
from course_lib.paths import offline

__all__ = ["env_report"]

#: Libraries the course uses, in the order the parts introduce them.
COURSE_LIBRARIES = (
    "torch", "torchvision", "numpy", "matplotlib", "mlxtend",
    "opacus", "syft", "syft-rds", "flwr", "tenseal", "phe", "gmpy2",
)  # fmt: skip


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def env_report(*, show: bool = True) -> dict[str, str]:
    """Collect (and by default print) Python, platform, library versions, device and data source."""
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    elif torch.backends.mps.is_available():
        device = "mps (Apple silicon)"
    else:
        device = f"cpu ({os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads)"
    report = {
        "python": sys.version.split()[0],
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
