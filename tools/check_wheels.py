"""Prove the course installs from binary wheels on the Pythons it supports (CI runs this).

``python -m tools.check_wheels`` asks pip to *resolve* — ``--dry-run``, nothing is installed —
these installs, each from binary wheels only (``--only-binary=:all:``), as a Linux machine
with a given Python would:

1. ``requirements.txt`` on Linux for every ``--python`` (default: 3.13, Colab's default runtime):
   no package may need a compiler, and tenseal, flwr, ray, syft and rbcl must resolve;
2. Colab's install cells — ``course_lib``'s dependencies and its ``dp``, ``fl`` and ``he`` extras —
   with Colab's own ipython and ipykernel pinned (``COLAB_PINS``, from Colab's published
   runtime): if it resolves, ``%pip install`` keeps them.

PyTorch is left out of both resolutions (``TORCH_FAMILY``, and opacus, whose only binary concern
is torch): torch's Linux wheels pull in NVIDIA's CUDA wheels, several GB that the course's machines
neither need nor carry in their package mirror. Colab ships torch 2.11 / torchvision 0.26
preinstalled, which the requirements admit (``torch>=2.6``, ``torchvision>=0.21``), and opacus is
a pure-Python wheel; ``torch_family_admits_colab`` checks those ranges against Colab's versions.

Windows is not resolved here: pip evaluates environment markers such as ``sys_platform`` for the
machine it runs on, not for ``--platform``. The one Windows gap (no ray wheel for Python 3.13, so
flwr leaves it out there) is checked from flwr's metadata in ``tests/test_packaging.py``.

Needs the package index (pip's own configuration decides which). Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from course_lib.paths import REPO_ROOT

__all__ = [
    "COLAB_PINS",
    "colab_requirements",
    "resolve",
    "torch_family_admits_colab",
    "without_torch_family",
]

LINUX = ("manylinux_2_28_x86_64", "manylinux2014_x86_64")
#: What Colab's default runtime ships and its front end depends on (never upgraded by the course).
COLAB_PINS = ("ipython==7.34.0", "ipykernel==6.17.1")
#: Colab's preinstalled PyTorch; checked against the requirements' ranges, not resolved (see above).
COLAB_TORCH = {"torch": "2.11.0", "torchvision": "0.26.0"}
#: Left out of the binary resolution: torch's Linux wheels need NVIDIA's CUDA wheels.
TORCH_FAMILY = ("torch", "torchvision", "opacus")
COLAB_EXTRAS = ("dp", "fl", "he")
MUST_RESOLVE = ("tenseal", "flwr", "ray", "syft", "rbcl")


def colab_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """What ``pip install -e ".[dp]"`` (or ``[fl]``, ``[he]``) asks for: the dependencies and the
    extras the lessons' install cells use — never the ``dev`` tools (jupyter, ipykernel)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    return list(project["dependencies"]) + [req for name in COLAB_EXTRAS for req in extras[name]]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement.strip(), maxsplit=1)[0].lower()


def without_torch_family(requirements: list[str]) -> list[str]:
    """``requirements`` less the packages of :data:`TORCH_FAMILY` (see the module docstring)."""
    return [r for r in requirements if _name(r) not in TORCH_FAMILY]


def torch_family_admits_colab(requirements: list[str]) -> list[str]:
    """The requirements that Colab's preinstalled torch/torchvision do *not* satisfy (want: [])."""
    from packaging.requirements import Requirement

    refused = []
    for line in requirements:
        requirement = Requirement(line)
        version = COLAB_TORCH.get(requirement.name.lower())
        if version is not None and not requirement.specifier.contains(version):
            refused.append(f"{line} (Colab has {version})")
    return refused


def resolve(
    requirements: list[str],
    python: str,
    platforms: tuple[str, ...],
    constraints: tuple[str, ...] = (),
) -> dict[str, str]:
    """Resolve ``requirements`` from binary wheels for CPython ``python`` (e.g. ``"3.13"``) on
    ``platforms``; returns ``{name: version}`` of everything pip would install.

    Raises RuntimeError with pip's own message when there is no binary-only solution.
    """
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
        (folder / "constraints.txt").write_text("\n".join(constraints) + "\n")
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--quiet", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", python, *(f"--platform={p}" for p in platforms),
            "--target", str(folder / "target"), "--report", str(folder / "report.json"),
            "-r", str(folder / "requirements.txt"), "-c", str(folder / "constraints.txt"),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr else "")
        report = json.loads((folder / "report.json").read_text())
    return {
        item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", nargs="+", default=["3.13"], help="CPython versions (3.13)")
    args = parser.parse_args(argv)
    requirements = [
        line.split("#")[0].strip()
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    failures = []
    refused = torch_family_admits_colab(requirements + colab_requirements())
    if refused:
        failures.append(f"Colab's preinstalled PyTorch is refused by: {', '.join(refused)}")
    checks = [
        (f"requirements.txt, cp{v.replace('.', '')} Linux", without_torch_family(requirements), v)
        for v in args.python
    ]
    checks.append(
        ("Colab install cells, cp313", without_torch_family(colab_requirements()), "3.13")
    )
    for label, wanted, python in checks:
        pins = COLAB_PINS if label.startswith("Colab") else ()
        try:
            found = resolve(wanted, python, LINUX, pins)
        except RuntimeError as error:
            failures.append(f"{label}: no binary-only solution: {error}")
            continue
        missing = [name for name in MUST_RESOLVE if name not in found]
        if missing:
            failures.append(f"{label}: {', '.join(missing)} did not resolve")
        shown = ", ".join(f"{name} {found[name]}" for name in MUST_RESOLVE if name in found)
        print(f"ok  {label}: {len(found)} wheels ({shown})")
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
