"""``make gpu-check``: does the course work on this machine's CUDA GPU?

Three checks, each on ``cuda`` (or the device given with ``--device``), reported in a small table:

1. **device tests** — the unit tests' CUDA parametrizations (every test id containing ``cuda``
   in :data:`DEVICE_TEST_FILES`), run by pytest in a subprocess; for ``cuda:N`` the subprocess
   sees only GPU ``N`` (``CUDA_VISIBLE_DEVICES``), so its ``cuda`` is the GPU you named;
2. **DP-SGD** — :func:`course_lib.dp.dpsgd.train_private` for one epoch on 2,000 MNIST images;
3. **FedAvg** — :func:`course_lib.fl.fedavg.run_fedavg`, 2 rounds over 4 IID clients.

A training check passes when the model is still on the device afterwards, every number it
reports is finite and its test accuracy beats chance (10 classes) by a clear margin (> 30 %).

Exit status: **0** every check passed; **1** a check failed; **2** nothing was checked, because
there is no CUDA device (the message says why: a CPU-only PyTorch build, or no GPU visible) or
``--device`` names a device this machine lacks (``cuda:N`` beyond its GPUs, or no device name at
all). A machine without a GPU therefore never reports success. ``--device cpu`` runs the same
checks on the CPU (that is how the tool itself is tested on machines without a GPU).

    python -m tools.gpu_check                 # what `make gpu-check` runs
    python -m tools.gpu_check --device cuda:1 # another GPU
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["DEVICE_TEST_FILES", "Result", "cuda_problem", "main", "run_checks"]

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Test files with a CUDA parametrization (``pytest.param("cuda", marks=skipif(no CUDA))``).
DEVICE_TEST_FILES = (
    "tests/test_models.py",
    "tests/dp/test_mechanisms.py",
    "tests/dp/test_dpsgd.py",
    "tests/dp/test_pate.py",
    "tests/fl/test_fedavg.py",
    "tests/fl/test_dp_fedavg.py",
    "tests/fl/test_gradient_inversion.py",
    "tests/fl/test_split_learning.py",
    "tests/dp/test_memorization_device.py",
    "tests/smpc/test_device.py",
)

#: A training check must reach this test accuracy (chance is 10 %).
MIN_ACCURACY = 0.30


@dataclass
class Result:
    """One row of the table: the check's name, ``passed`` / ``FAILED``, what it measured."""

    name: str
    passed: bool
    detail: str
    seconds: float


def cuda_problem() -> str | None:
    """Why CUDA cannot be used here, in words; ``None`` when it can."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is a CPU-only build"
    return f"PyTorch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no GPU"


def _visible_devices(index: int) -> str:
    """``CUDA_VISIBLE_DEVICES`` for a subprocess that must see only this process's GPU ``index``
    (which is itself counted among this process's visible GPUs, if that variable is set)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return str(index)
    return [entry.strip() for entry in visible.split(",")][index]


def _device_tests(device: torch.device) -> tuple[bool, str]:
    """Run the tests' CUDA parametrizations on ``device``; on the CPU, their CPU twins
    (``-k cpu``)."""
    keyword = "cuda" if device.type == "cuda" else "cpu"
    env = dict(os.environ)
    if device.type == "cuda" and device.index is not None:
        env["CUDA_VISIBLE_DEVICES"] = _visible_devices(device.index)
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.xml"
        command = [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", keyword,
            f"--junitxml={report}", *DEVICE_TEST_FILES,
        ]  # fmt: skip
        completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        if not report.exists():
            return False, f"pytest did not run (exit {completed.returncode})"
        counts = {key: 0 for key in ("tests", "failures", "errors", "skipped")}
        for suite in ET.parse(report).getroot().iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, 0))
    failed = counts["failures"] + counts["errors"]
    ran = counts["tests"] - counts["skipped"]
    detail = f"{ran - failed}/{ran} passed, {counts['skipped']} skipped ({keyword} cases)"
    return completed.returncode == 0 and failed == 0 and ran > 0, detail


def _mnist(train_size: int):
    from course_lib.data import load_mnist

    train = load_mnist(train=True, max_samples=train_size)
    test = load_mnist(train=False, max_samples=500)
    return train, test


def _on_device(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether every parameter is on ``device`` (on its very GPU when ``device`` has an index)."""
    return all(
        p.device.type == device.type and device.index in (None, p.device.index)
        for p in model.parameters()
    )


def _dpsgd(device: torch.device) -> tuple[bool, str]:
    from course_lib.dp.dpsgd import train_private
    from course_lib.models import MLP
    from course_lib.training import seed_everything

    seed_everything(0)
    train, test = _mnist(2000)
    model = MLP().to(device)
    history = train_private(
        model, train, test, epochs=1, sample_rate=128 / len(train), lr=0.5,
        noise_multiplier=1.0, max_grad_norm=1.0, progress=False,
    )  # fmt: skip
    epsilon, accuracy = history.epsilon[-1], history.val_acc[-1]
    finite = all(map(math.isfinite, (epsilon, accuracy, *history.train_loss)))
    ok = finite and _on_device(model, device) and accuracy > MIN_ACCURACY
    return ok, f"1 epoch, test accuracy {accuracy:.1%}, ε = {epsilon:.2f} (δ = 1e-5)"


def _fedavg(device: torch.device) -> tuple[bool, str]:
    from course_lib.fl.fedavg import run_fedavg
    from course_lib.fl.partition import client_subsets, partition_iid
    from course_lib.models import MLP

    train, test = _mnist(2000)
    clients = client_subsets(train, partition_iid(train.labels, 4, seed=0))
    history = run_fedavg(
        lambda: MLP().to(device), clients, test, rounds=2, lr=0.1, seed=0, progress=False
    )
    accuracy = history.val_acc[-1]
    ok = (
        math.isfinite(accuracy)
        and history.model is not None
        and _on_device(history.model, device)
        and accuracy > MIN_ACCURACY
    )
    return ok, f"2 rounds × 4 clients, test accuracy {accuracy:.1%}"


CHECKS: dict[str, Callable[[torch.device], tuple[bool, str]]] = {
    "device tests": _device_tests,
    "DP-SGD training": _dpsgd,
    "FedAvg training": _fedavg,
}


def run_checks(device: torch.device, names: list[str] | None = None) -> list[Result]:
    """Run the checks called ``names`` (default: all) on ``device``; an exception fails one check
    (its message becomes the detail) and the others still run."""
    results = []
    for name in names or list(CHECKS):
        started = time.perf_counter()
        try:
            passed, detail = CHECKS[name](device)
        except Exception as error:  # noqa: BLE001 — report any failure in the table
            passed, detail = False, f"{type(error).__name__}: {error}".splitlines()[0][:120]
        results.append(Result(name, passed, detail, time.perf_counter() - started))
    return results


def format_table(results: list[Result], device: torch.device) -> str:
    """The results as a small text table, with a summary line."""
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  result  seconds  detail"]
    for r in results:
        status = "passed" if r.passed else "FAILED"
        lines.append(f"{r.name:<{width}}  {status:<6}  {r.seconds:7.1f}  {r.detail}")
    failed = sum(not r.passed for r in results)
    lines.append(
        f"{len(results) - failed} of {len(results)} checks passed on {device}"
        + (f"; {failed} FAILED" if failed else "")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), help="run only these checks")
    args = parser.parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        print(f"gpu-check: --device {args.device!r} is not a device name; use cuda, cuda:N or cpu.")
        print("Nothing was checked (exit 2).")
        return 2
    if device.type == "cuda":
        problem = cuda_problem()
        if problem is not None:
            print(f"gpu-check skipped: no CUDA device — {problem}. Nothing was checked (exit 2).")
            print("In Colab: Runtime → Change runtime type → T4 GPU, then run it again.")
            return 2
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            print(
                f"gpu-check: --device {args.device} names GPU {device.index}, but PyTorch sees "
                f"{count} GPU(s), numbered 0 to {count - 1}. Nothing was checked (exit 2)."
            )
            return 2
        print(f"gpu-check on {device}: {torch.cuda.get_device_name(device)}")
    else:
        print(f"gpu-check on {device} (not a GPU: this only tests the checks themselves)")
    results = run_checks(device, args.only)
    print(format_table(results, device))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
