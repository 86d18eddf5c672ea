"""Self-checking exercises: ``check("NN.name", answer)`` prints ✓ or ✗ with a hint.

Checkers live in one module per part of the course (``foundations``, ``dp``, ``fl``, ``smpc``);
they are discovered automatically. See :mod:`course_lib.exercises._registry` for how to add one.
"""

from course_lib.exercises._registry import (
    Incorrect,
    check,
    exercise,
    expect,
    expect_callable,
    expect_close,
    expect_equal,
    expect_shape,
    registered_exercises,
)

__all__ = [
    "Incorrect",
    "check",
    "exercise",
    "expect",
    "expect_callable",
    "expect_close",
    "expect_equal",
    "expect_shape",
    "registered_exercises",
]
