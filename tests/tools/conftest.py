"""Fixtures shared by the grader's tests (``test_grading.py``, ``test_grading_attacks.py``)."""

from __future__ import annotations

import os

import pytest

from tools.grading.sandbox import SandboxUnavailable, require_bwrap

try:
    require_bwrap()
    NO_SANDBOX = ""
except SandboxUnavailable as error:  # said, not hidden: grading needs bubblewrap
    NO_SANDBOX = str(error)
REQUIRE_SANDBOX = os.environ.get("COURSE_REQUIRE_SANDBOX") == "1"  # CI: never skip these


@pytest.fixture(scope="session")
def sandbox_available() -> None:
    """Skip, saying why, where bubblewrap cannot start — or fail where COURSE_REQUIRE_SANDBOX=1
    (CI), so that a sandbox that stopped working cannot pass as skipped tests."""
    if NO_SANDBOX and REQUIRE_SANDBOX:
        pytest.fail(f"COURSE_REQUIRE_SANDBOX=1 but the sandbox cannot start: {NO_SANDBOX}")
    if NO_SANDBOX:
        pytest.skip(f"no sandbox here: {NO_SANDBOX} (set COURSE_REQUIRE_SANDBOX=1 to fail)")
