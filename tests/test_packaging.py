"""Install files agree with each other, and CI runs the README's test command."""

from __future__ import annotations

import re
import tomllib

from course_lib.paths import REPO_ROOT


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
    for target in ("lab:", "test:", "execute:", "student:"):
        assert target in makefile
