"""Grading a folder of submitted notebooks: ``python -m tools.grade SUBMISSIONS_DIR``.

The pieces:

- :mod:`tools.grading.lesson` — which exercises a lesson has and where their answers are, read
  from the *instructor's* notebook and the checker registry (never from a submission);
- :mod:`tools.grading.sandbox` — the bubblewrap sandbox every piece of student code runs in;
- :mod:`tools.grading.execute` — inside the sandbox: runs a submission top to bottom, copies each
  answer out after the cell that checks it, and calls its functions on the judge's inputs;
- :mod:`tools.grading.codec` — the plain data (JSON, no pickle) answers cross the wall as;
- :mod:`tools.grading.judge` — outside the sandbox: judges each answer with the course's checker
  and the hidden cases (:mod:`tools.grading.hidden`), never running student code;
- :mod:`tools.grade` — the command: a pool of workers, the grades CSV and a feedback file per
  student.
"""
