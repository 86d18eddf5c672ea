"""Sphinx configuration of the course website (both editions).

``python -m tools.site`` stages the sources and runs Sphinx with this folder as its configuration
directory and one tag, ``student`` or ``instructor``; the tag picks the edition (see
``tools/site/editions.py``). Lesson pages are rendered by MyST-NB from the notebooks' stored outputs
(nothing is executed); the theme is sphinx-book-theme; formulas are typeset by MathJax 2, copied
from the ``jupyter-server-mathjax`` package into ``_static/mathjax/`` so no page needs the network.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sphinx.application import Sphinx

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # so `sphinx-build -c tools/site …` finds the course's tools too
    sys.path.insert(0, str(ROOT))

import jupyter_server_mathjax  # noqa: E402

from tools import colab  # noqa: E402
from tools.site.editions import EDITIONS  # noqa: E402

MATHJAX = Path(jupyter_server_mathjax.__file__).parent / "static"
# MathJax's optional accessibility explorer (extensions/a11y/) loads a polyfill from a CDN; the
# site leaves it out (the default AssistiveMML extension, which screen readers use, stays).
MATHJAX_LEFT_OUT = ("a11y",)
_chosen = [name for name in EDITIONS if tags.has(name)]  # type: ignore[name-defined]  # noqa: F821
if len(_chosen) != 1:
    raise ValueError(f"build with exactly one of the tags {sorted(EDITIONS)}, not {_chosen}")
EDITION = EDITIONS[_chosen[0]]
ADDRESS = colab.load_address(ROOT / "pyproject.toml")

project = "Private AI"
author = "the Private AI course"
copyright = "the Private AI course authors"
html_title = f"Private AI · {EDITION.label}"
language = "en"

extensions = ["myst_nb"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["mystnb.unknown_mime_type"]

# MyST: $…$ and $$…$$ maths and LaTeX environments, as the notebooks write them.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# MyST-NB: show the stored outputs, never execute; one block per stream; no widget JavaScript
# (tools/site/pages.py turns the saved progress widgets into plain HTML bars).
nb_execution_mode = "off"
nb_merge_streams = True
nb_ipywidgets_js: dict[str, dict[str, str]] = {}  # script URL → its attributes (MyST-NB's type)

# MathJax 2 from the local copy; Sphinx writes \(…\) and \[…\] into elements of class "math".
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
# jupyter-server-mathjax ships only the STIX-Web fonts, so ask for them (not MathJax's default
# TeX fonts) and never for fonts installed on the reader's machine or image fonts.
mathjax2_config = {
    "tex2jax": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        # MyST-NB marks a notebook's page "tex2jax_ignore" and its formulas "math"
        "processClass": "tex2jax_process|mathjax_process|math|output_area",
    },
    "HTML-CSS": {"availableFonts": [], "webFont": "STIX-Web", "imageFont": None},
    "SVG": {"font": "STIX-Web"},
    "messageStyle": "none",
}

html_theme = "sphinx_book_theme"
html_static_path = ["static"]
html_css_files = ["course.css"]
html_last_updated_fmt = None
html_copy_source = True  # lets the download button offer each page's notebook
html_theme_options = {
    "repository_url": f"https://github.com/{ADDRESS.repository}",
    "repository_branch": EDITION.branch(ADDRESS),
    "path_to_docs": "",
    "use_repository_button": True,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "launch_buttons": {"colab_url": "https://colab.research.google.com"},
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
}


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    """Put the MathJax copy into the built site (Sphinx's build-finished event)."""
    if exception is None and app.builder.format == "html":
        shutil.copytree(
            MATHJAX,
            Path(app.outdir) / "_static" / "mathjax",
            ignore=shutil.ignore_patterns(*MATHJAX_LEFT_OUT),
            dirs_exist_ok=True,
        )


def setup(app: Sphinx) -> None:
    app.connect("build-finished", _copy_mathjax)
