"""The course website: ``python -m tools.site --edition student|instructor`` (``make site``,
``make site-instructor``), written to ``build/site/<edition>/`` (open its ``index.html``).

Two editions from one source, the committed notebooks and their stored outputs (nothing is
re-executed):

- **student** (``make site``) — each lesson as ``make student`` writes it (solutions stubbed, no
  ``# NBVAL_CHECK_OUTPUT``), showing the solved run's outputs except where they could give an
  answer away (cells with a solution, and cells computed from one: ``pages.revealing_cells``);
  its Colab buttons open the student branch;
- **instructor** (``make site-instructor``) — the notebooks as committed; Colab opens ``main``.

**The tool: Sphinx + MyST-NB + sphinx-book-theme** (the stack of Jupyter Book 1, which the
"Programming Differential Privacy" book is published with). What it gives a learner: a home page
with the paths and the course map, a sidebar table of contents by part, a contents list per page,
full-text search that runs in the browser, previous/next links, a Colab launch button and a
notebook download button on every lesson, a dark mode, and the notebooks' stored outputs (plots,
tables, text) as Jupyter showed them. How it fits offline CI: everything is a PyPI wheel that
``make install`` installs with the rest (no Node.js, no theme or template fetched at build time,
as Jupyter Book 2's mystmd does); the maths engine is MathJax 2.7.9 from the PyPI package
``jupyter-server-mathjax`` (the copy Jupyter Server serves), copied into ``_static/mathjax/``.
Both editions build with the network switched off (``unshare -n``), and the build itself fails on
any Sphinx warning, broken link, or page that would load something from another host.

**Build time** (both editions from scratch, measured 2026-11 on the course's 2-core machine while
it was shared, load average ~14): student 82 s, instructor 88 s of staging + Sphinx + checks
(105 s / 118 s wall with Python's start-up); a rebuild re-renders only the lessons that changed.
The hand-written generator this replaced took 121 s wall for its one site on the same machine at
the same load.

Modules:

- ``catalogue`` — the README's course map and learning paths, checked against the notebooks;
- ``editions`` — the two editions;
- ``pages`` — a lesson notebook as its page shows it (student outputs, progress bars, badges,
  a description as every figure's alt text);
- ``home`` — the home page;
- ``build`` — staging, ``sphinx-build``, and the checks of ``checks`` (links, nothing from the
  network);
- ``conf.py`` — the Sphinx configuration; ``static/course.css`` — the site's few styles.

Tests: ``tests/tools/test_site.py`` — both builds (solutions, links, network, Colab, navigation,
search), then headless Chromium on the student site (screenshots in ``build/site-screenshots/``).
"""
