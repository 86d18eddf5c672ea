"""Build tools for instructors and CI (student edition, site, grading) — not imported by lessons.

``course_lib`` is what learners import; everything here turns the instructor's notebooks into other
artefacts and runs as ``python -m tools.<name>`` from the repository root.
"""
