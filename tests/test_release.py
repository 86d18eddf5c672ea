"""A release an instructor can pin: one version in pyproject.toml, CITATION.cff and CHANGELOG.md,
and the license pyproject.toml declares, in full, in LICENSE."""

from __future__ import annotations

import re
import tomllib

import yaml

from course_lib.paths import REPO_ROOT

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
CHANGELOG = (REPO_ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
RELEASE = re.compile(r"^## (\d+\.\d+\.\d+) - (\d{4}-\d\d-\d\d)$", re.M)


def test_the_version_is_written_once_in_three_places() -> None:
    citation = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    releases = RELEASE.findall(CHANGELOG)
    assert releases, "CHANGELOG.md needs a '## X.Y.Z - YYYY-MM-DD' entry per release"
    newest, date = releases[0]
    assert PROJECT["version"] == newest == str(citation["version"])
    assert str(citation["date-released"]) == date
    versions = [tuple(map(int, version.split("."))) for version, _ in releases]
    assert versions == sorted(versions, reverse=True), "newest release first"
    assert CHANGELOG.index("## Unreleased") < CHANGELOG.index(f"## {newest}")


def test_citation_has_what_cff_requires() -> None:
    citation = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0"
    assert citation["message"] and citation["title"] and citation["authors"]
    assert all("name" in author or "family-names" in author for author in citation["authors"])
    assert citation["license"] == PROJECT["license"]["text"] == "Apache-2.0"


def test_license_is_the_full_apache_2_text() -> None:
    text = (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License\n                           Version 2.0, January 2004" in text
    sections = re.findall(r"^\s+(\d)\. [A-Z]", text.split("TERMS AND CONDITIONS")[1], re.M)
    assert sections == [str(n) for n in range(1, 10)], "the nine sections of the license"
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX" in text
