"""Install files agree with each other, the supported Pythons are declared truthfully, and CI
runs the README's test command and proves the requirements install from wheels."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from course_lib.environment import SUPPORTED_PYTHON, python_support
from course_lib.paths import REPO_ROOT

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def _requirement_lines(text: str) -> set[str]:
    return {line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()}


def _normalise(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement).lower()


def test_requirements_environment_and_pyproject_list_the_same_packages() -> None:
    requirements = {
        _normalise(r) for r in _requirement_lines((REPO_ROOT / "requirements.txt").read_text())
    }
    env = (REPO_ROOT / "environment.yml").read_text()
    pip_section = env.split("- pip:", 1)[1]
    env_packages = {_normalise(m) for m in re.findall(r"^\s+- (\S.*)$", pip_section, re.M)}
    assert env_packages == requirements
    assert re.search(r"^\s+- python=3\.11$", env, re.M)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"]) | {
        d for extra in project["optional-dependencies"].values() for d in extra
    }
    assert {_normalise(d) for d in declared} == requirements


def test_torch_ranges_admit_the_cached_wheels() -> None:
    requirements = (REPO_ROOT / "requirements.txt").read_text()
    assert re.search(r"^torch>=2\.\d+$", requirements, re.M), "torch must stay an open range (>=)"
    assert re.search(r"^torchvision>=0\.\d+$", requirements, re.M)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make test" in readme and "make lab" in readme
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in ("lab:", "lab-solutions:", "test:", "execute:", "student:", "publish-student:"):
        assert re.search(rf"^{target}", makefile, re.M), target


def test_supported_pythons_are_declared_once_and_truthfully() -> None:
    """3.11–3.13: classifiers, requires-python, the environment report and the docs agree."""
    oldest, newest = SUPPORTED_PYTHON
    versions = [f"3.{minor}" for minor in range(oldest[1], newest[1] + 1)]
    assert versions == ["3.11", "3.12", "3.13"]
    classified = [
        c.rsplit(" :: ", 1)[1]
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert classified == versions
    requires = SpecifierSet(PROJECT["requires-python"])
    assert all(requires.contains(f"{v}.0") for v in versions)
    assert not requires.contains("3.10.14"), "on 3.10 pip picks untested flwr/tenseal releases"
    for doc in ("README.md", "INSTALLATION.md"):
        assert "3.11–3.13" in (REPO_ROOT / doc).read_text(), doc
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert f"(3, {oldest[1]}) <= sys.version_info[:2] <= (3, {newest[1]})" in makefile


def test_python_support_in_the_environment_report() -> None:
    assert python_support((3, 13), "Linux") == "supported"
    assert python_support((3, 10), "Linux").startswith("not supported")
    assert python_support((3, 14), "Darwin").startswith("not supported")
    assert "ray has no Windows wheel" in python_support((3, 13), "Windows")
    assert python_support((3, 12), "Windows") == "supported"


def _needs_ray(python: str, platform: str) -> bool:
    environment = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": platform,
        "platform_system": {"win32": "Windows", "linux": "Linux"}[platform],
        "extra": "simulation",
    }
    requirements = [Requirement(r) for r in importlib.metadata.requires("flwr") or []]
    return any(
        r.name == "ray" and (r.marker is None or r.marker.evaluate(environment))
        for r in requirements
    )


@pytest.mark.parametrize("python", ["3.11", "3.12", "3.13"])
def test_the_one_platform_gap_is_windows_with_python_313(python: str) -> None:
    """flwr's own metadata leaves ray (Flower's simulation engine) out on Windows + 3.13 only —
    the gap INSTALLATION.md documents and env_report() names."""
    assert _needs_ray(python, "linux")
    assert _needs_ray(python, "win32") == (python != "3.13")
    documented = (REPO_ROOT / "INSTALLATION.md").read_text()
    assert "Windows" in documented and "ray" in documented


def test_ci_proves_binary_wheels_for_python_313() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r"-m tools\.check_wheels --python [\d. ]*3\.13", ci)
    from tools import check_wheels

    assert {"tenseal", "flwr", "ray"} <= set(check_wheels.MUST_RESOLVE)


def test_colabs_preinstalled_torch_is_admitted_and_a_stricter_pin_is_caught() -> None:
    """The one part of the wheel check that runs offline: Colab keeps its own torch/torchvision."""
    from tools import check_wheels

    ours = sorted(_requirement_lines((REPO_ROOT / "requirements.txt").read_text()))
    ours += check_wheels.colab_requirements()
    assert check_wheels.torch_family_admits_colab(ours) == []
    assert check_wheels.torch_family_admits_colab(["torch>=2.12", "torchvision==0.26.0"]) == [
        "torch>=2.12 (Colab has 2.11.0)"
    ]
    assert check_wheels.without_torch_family(["torch>=2.6", "opacus>=1.5", "phe>=1.5"]) == [
        "phe>=1.5"
    ]


# -- the Makefile's install doors: root, a CPU-only machine -------------------------------------


def _make_dry_run(
    tmp_path: Path, *args: str, uid: int = 1000, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``make -n ARGS`` (prints the commands, runs none) as if ``id -u`` said ``uid``; the
    requirements count as newer than the install stamp, so the install recipe is printed too."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    fake_id = fake_bin / "id"
    fake_id.write_text(f"#!/bin/sh\necho {uid}\n")
    fake_id.chmod(0o755)
    # without the outer make's variables (make test runs pytest inside make)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"}
    }
    env["PATH"] = f"{fake_bin}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["make", "--no-print-directory", "-n", "-W", "requirements.txt", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=check,
    )


def _jupyter_line(output: str) -> str:
    (line,) = [line for line in output.splitlines() if "/jupyter lab" in line]
    return line


@pytest.mark.parametrize("target", ["lab", "lab-solutions"])
def test_make_lab_passes_allow_root_only_to_root(tmp_path: Path, target: str) -> None:
    """JupyterLab refuses to start as root (Docker, WSL, cloud VMs) without --allow-root."""
    folder = "student/notebooks/" if target == "lab" else "notebooks/"
    as_root = _jupyter_line(_make_dry_run(tmp_path, target, uid=0).stdout)
    assert as_root.split()[-2:] == ["--allow-root", folder], as_root
    as_user = _jupyter_line(_make_dry_run(tmp_path, target, uid=1000).stdout)
    assert as_user.split()[1:] == ["lab", folder], as_user
    extra = _jupyter_line(_make_dry_run(tmp_path, target, "LAB_ARGS=--no-browser", uid=0).stdout)
    assert extra.split()[-3:] == ["--allow-root", "--no-browser", folder], extra


def test_make_install_torch_cpu_takes_the_cpu_wheels_first(tmp_path: Path) -> None:
    cpu = _make_dry_run(tmp_path, "install", "TORCH=cpu").stdout.splitlines()
    torch_line = next(i for i, line in enumerate(cpu) if "download.pytorch.org" in line)
    assert cpu[torch_line].endswith(
        "-m pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    )
    requirements_line = next(i for i, line in enumerate(cpu) if "-r requirements.txt" in line)
    assert torch_line < requirements_line, "the CPU torch must be there before the requirements"
    default = _make_dry_run(tmp_path, "install").stdout
    assert "-r requirements.txt" in default and "download.pytorch.org" not in default
    wrong = _make_dry_run(tmp_path, "install", "TORCH=cuda", check=False)
    assert wrong.returncode != 0 and "TORCH can be cpu or left out, got 'cuda'" in wrong.stderr
    assert "pip install" not in wrong.stdout, "refused before anything was installed"


def test_make_federation_passes_tls_only_when_asked(tmp_path: Path) -> None:
    def flower_line(*args: str) -> list[str]:
        output = _make_dry_run(tmp_path, "federation", *args).stdout
        (line,) = [line for line in output.splitlines() if "course_lib.fl.flower" in line]
        return line.split()

    assert flower_line("TLS=1", "NODES=3")[-5:] == ["--nodes", "3", "--rounds", "2", "--tls"]
    assert "--tls" not in flower_line()
    assert "--tls" not in flower_line("TLS=0")


def test_make_federation_runs_the_run_role_against_a_given_superlink(tmp_path: Path) -> None:
    """SUPERLINK=host:port CA=... swaps the local federation for the `run` role of
    course_lib.fl.deployment against that SuperLink (TLS implied: no --tls flag); without CA it
    stops before installing or starting anything."""

    def python_line(*args: str) -> list[str]:
        output = _make_dry_run(tmp_path, "federation", *args).stdout
        (line,) = [line for line in output.splitlines() if " -m course_lib.fl." in line]
        return line.split()

    remote = python_line("SUPERLINK=10.0.0.1:9093", "CA=tls/ca.crt", "NODES=3", "TLS=1")
    start = remote.index("-m")
    assert remote[start:] == [
        "-m", "course_lib.fl.deployment", "run", "--superlink", "10.0.0.1:9093",
        "--ca", "tls/ca.crt", "--nodes", "3", "--rounds", "2",
    ]  # fmt: skip
    local = python_line()
    assert local[local.index("-m") :] == [
        "-m", "course_lib.fl.flower", "--runtime", "deployment", "--nodes", "2", "--rounds", "2",
    ]  # fmt: skip
    missing = _make_dry_run(tmp_path, "federation", "SUPERLINK=10.0.0.1:9093", check=False)
    assert missing.returncode != 0 and "needs CA=path/to/ca.crt" in missing.stderr
    assert missing.stdout == "", "refused before the install recipe"
    # other targets do not care about SUPERLINK
    assert _make_dry_run(tmp_path, "lint", "SUPERLINK=10.0.0.1:9093").returncode == 0
