"""course_lib — the helper package of the Private AI course.

Each lesson first writes an idea out by hand, then moves it here so later lessons can call it:

- :mod:`course_lib.data` — MNIST / Fashion-MNIST that work offline
- :mod:`course_lib.models`, :mod:`course_lib.training`, :mod:`course_lib.plots` — Part I
- :mod:`course_lib.randomness` — secure (default) and seeded-for-teaching randomness
- :mod:`course_lib.dp` — differential privacy (Part II)
- :mod:`course_lib.fl` — federated learning (Part III)
- :mod:`course_lib.smpc`, :mod:`course_lib.he`, :mod:`course_lib.psi` — encrypted computation
  (Part IV)
- :mod:`course_lib.exercises` — self-checking exercises

The instructors' build tools (student edition, site) live apart, in the top-level ``tools/``.
- :mod:`course_lib.validation` — shared input checks
"""

from course_lib.environment import env_report, lesson_device

__version__ = "0.1.0"
__all__ = ["env_report", "lesson_device", "__version__"]
