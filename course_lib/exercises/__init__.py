"""Self-checking exercises: ``check("NN.name", answer)`` prints ✓ or ✗ and, after a wrong answer,
a nudge — then a hint (also on request: ``hint("NN.name")``).

Checkers live in one module per part of the course (``foundations``, ``dp_basics``, ``fl_basics``,
…); they are discovered automatically. See :mod:`course_lib.exercises._registry` for how to add one.
"""

from course_lib.exercises._registry import (
    Incorrect,
    check,
    exercise,
    expect,
    expect_callable,
    expect_close,
    expect_equal,
    expect_not_none,
    expect_shape,
    hint,
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
    "expect_not_none",
    "expect_shape",
    "hint",
    "registered_exercises",
]
