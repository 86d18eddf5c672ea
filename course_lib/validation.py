"""Input checks shared across course_lib, with messages a learner can act on."""

from __future__ import annotations

import math

__all__ = ["check_positive"]


def check_positive(value: float, name: str) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return float(value)
