"""The shared input check used by the DP and FL modules."""

from __future__ import annotations

import math

import pytest

from course_lib.validation import check_positive


def test_accepts_positive_numbers() -> None:
    assert check_positive(3, "sigma") == 3.0 and isinstance(check_positive(3, "sigma"), float)


@pytest.mark.parametrize("bad", [0, -1.5, math.nan, math.inf, True, "2"])
def test_rejects_everything_else_with_the_name(bad: object) -> None:
    with pytest.raises(ValueError, match="sigma"):
        check_positive(bad, "sigma")  # type: ignore[arg-type]
