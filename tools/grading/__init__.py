"""Grading a folder of submitted notebooks: ``python -m tools.grade SUBMISSIONS_DIR``.

The pieces, each run in its own process so that no submission touches the checkers:

- :mod:`tools.grading.lesson` — which exercises a lesson has and where their answers are, read
  from the *instructor's* notebook and the checker registry (never from a submission);
- :mod:`tools.grading.execute` — runs one submission top to bottom in a fresh Jupyter kernel and
  copies each answer out of the kernel (cloudpickle) right after the cell that checks it;
- :mod:`tools.grading.judge` — a fresh Python process the submission never ran in: loads the
  course's checkers first, then the answers, and judges each answer with the course checker and
  with hidden inputs (:mod:`tools.grading.hidden`);
- :mod:`tools.grade` — the command: a pool of workers, a timeout per cell and per notebook, the
  grades CSV and a feedback file per student.
"""
