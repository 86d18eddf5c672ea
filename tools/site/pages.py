"""Turn a lesson notebook into the notebook its site page is rendered from (nothing is re-run).

- :func:`student_page` — the student edition of a lesson (``tools.student_edition``) with the
  outputs of the instructor's solved run put back wherever they cannot give an answer away;
- :func:`static_progress_bars` — tqdm's progress widgets as plain HTML bars, so a page shows the
  finished bar without loading the Jupyter widget JavaScript from the network;
- :func:`local_colab_badges` — the lesson's "Open in Colab" badge (an image on Google's server)
  as a text link to the same address;
- :func:`figure_alt_texts` — a description as the alt text of every image a code cell shows
  (MyST-NB would otherwise write the image's hash file name there).
"""

from __future__ import annotations

import ast
import re

import nbformat

from tools.student_edition import BEGIN, make_student_notebook

__all__ = [
    "figure_alt_text",
    "figure_alt_texts",
    "local_colab_badges",
    "revealing_cells",
    "static_progress_bars",
    "student_page",
]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_TQDM_CHILDREN = ["HTMLModel", "FloatProgressModel", "HTMLModel"]  # label, bar, counts
_COLAB_BADGE = re.compile(
    r"\[!\[[^\]]*\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
    r"\((?P<url>https://colab\.research\.google\.com/[^)\s]+)\)"
)


def _has_solution(source: str) -> bool:
    return any(BEGIN.match(line) for line in source.splitlines())


def _top_level_bindings(statement: ast.stmt) -> set[str]:
    """Names a top-level statement binds in the notebook's namespace (not a function's locals)."""
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {statement.name}
    bound: set[str] = set()
    pending: list[ast.AST] = [statement]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).partition(".")[0])
        if not isinstance(node, ast.Lambda | ast.FunctionDef | ast.AsyncFunctionDef):
            pending.extend(ast.iter_child_nodes(node))
    return bound


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names the cell binds at top level, names it reads anywhere). A cell Python cannot parse
    (an IPython magic) counts as binding and reading every identifier in it: the safe guess."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        words = set(re.findall(r"[A-Za-z_]\w*", source))
        return words, words
    bound = set().union(*(_top_level_bindings(statement) for statement in tree.body))
    read = {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }
    return bound, read


def revealing_cells(notebook: nbformat.NotebookNode) -> list[int]:
    """Indices of the code cells whose stored outputs could give an exercise's answer away.

    A cell reveals if it holds a solution block, or reads a name whose value came from one — the
    names a solution cell binds at top level (``answer``, ``def count_where``), and, in turn,
    whatever a revealing cell binds. A later cell that binds such a name afresh, without reading a
    revealing name, makes it harmless again. Cells are taken in notebook order (Run All).
    """
    revealing: list[int] = []
    tainted: set[str] = set()
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        bound, read = _names(cell.source)
        if _has_solution(cell.source) or read & tainted:
            revealing.append(index)
            tainted |= bound
        else:
            tainted -= bound
    return revealing


def student_page(notebook: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The student edition of lesson ``name`` (solutions stubbed, no ``# NBVAL_CHECK_OUTPUT``,
    badge and install cell on the student branch: exactly as ``make student`` writes it), showing
    the instructor's stored outputs except in the cells of :func:`revealing_cells`, which stay
    empty as in the learner's own fresh notebook."""
    student = make_student_notebook(notebook, name)
    hidden = set(revealing_cells(notebook))
    for index, (solved, cell) in enumerate(zip(notebook.cells, student.cells, strict=True)):
        if cell.cell_type == "code" and index not in hidden:
            cell.outputs = nbformat.from_dict(solved.outputs)
            cell.execution_count = solved.execution_count
    return student


def _hidden(box: dict, state: dict) -> bool:
    """Whether a widget's saved layout hides it (tqdm hides a finished ``leave=False`` bar)."""
    layout = state.get(box.get("layout", "").removeprefix("IPY_MODEL_"), {}).get("state", {})
    return layout.get("visibility") == "hidden" or layout.get("display") == "none"


def _progress_html(model_id: str, state: dict) -> str | None:
    """tqdm's widget (an HBox of label, FloatProgress, counts) as static HTML — ``""`` if the
    notebook hides it — or None when the widget ``model_id`` is something else or its saved state
    is missing."""
    box = state.get(model_id, {}).get("state", {})
    children = [ref.removeprefix("IPY_MODEL_") for ref in box.get("children", [])]
    models = [state.get(child, {}) for child in children]
    names = [model.get("model_name") for model in models]
    if box.get("_model_name") != "HBoxModel" or names != _TQDM_CHILDREN:
        return None
    if _hidden(box, state):
        return ""
    left, bar, right = (model["state"] for model in models)
    value, maximum = float(bar.get("value", 0)), float(bar.get("max", 1))
    return (
        '<div class="course-progress">'
        f"<span>{left.get('value', '')}</span>"
        f'<progress value="{value}" max="{maximum}"></progress>'
        f"<span>{right.get('value', '')}</span></div>"
    )


def static_progress_bars(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``notebook`` with each saved progress widget replaced by :func:`_progress_html` (a hidden
    one removed; any other widget shown by its plain-text fallback) and the saved widget state
    dropped, so nothing needs the widget JavaScript. Modifies and returns ``notebook``."""
    state = notebook.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in notebook.cells:
        kept = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).pop(WIDGET_VIEW, None)
            bar = None if view is None else _progress_html(view.get("model_id", ""), state)
            if bar == "":
                continue
            if bar is not None:
                output.data = nbformat.from_dict({"text/html": bar})
            kept.append(output)
        if cell.cell_type == "code":
            cell.outputs = kept
    return notebook


def local_colab_badges(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``notebook`` with every "Open in Colab" badge in its markdown replaced by a text link to
    the same address (the badge image would be fetched from Google when the page loads).
    Modifies and returns ``notebook``."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = _COLAB_BADGE.sub(r"[Open this lesson in Colab](\g<url>)", cell.source)
    return notebook


# -- alt text of the figures a code cell shows --------------------------------------------------

IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
#: the plain-text reprs that say nothing about the picture (matplotlib's, IPython's, any object's)
_BARE_REPR = re.compile(
    r"^<(?:Figure size [\d.x]+ with (?P<axes>\d+) Axes|.* object(?: at 0x\w+)?)>$"
)
_LABEL_CALLS = {  # call name → what its first string argument is
    "set_title": "title",
    "suptitle": "title",
    "title": "title",
    "set_xlabel": "x axis",
    "xlabel": "x axis",
    "set_ylabel": "y axis",
    "ylabel": "y axis",
}
_LABEL_KEYWORDS = {"title": "title", "xlabel": "x axis", "ylabel": "y axis"}
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)


def _text_of(node: ast.expr) -> str | None:
    """A string literal's text; an f-string's with each ``{…}`` as "…"; else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value if isinstance(part, ast.Constant) and isinstance(part.value, str) else "…"
            for part in node.values
        )
    return None


def _plot_labels(source: str) -> list[tuple[str, str]]:
    """``(kind, text)`` of the titles and axis labels a cell's code writes, in source order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found: list[tuple[int, int, str, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in _LABEL_CALLS and node.args and (text := _text_of(node.args[0])):
            found.append((node.lineno, node.col_offset, _LABEL_CALLS[name], text))
        for keyword in node.keywords:
            if keyword.arg in _LABEL_KEYWORDS and (text := _text_of(keyword.value)):
                found.append((node.lineno, node.col_offset, _LABEL_KEYWORDS[keyword.arg], text))
    labels: list[tuple[str, str]] = []
    for _, _, kind, text in sorted(found):
        text = " ".join(text.split())
        if (kind, text) not in labels:
            labels.append((kind, text))
    return labels


def figure_alt_text(source: str, plain: str | None, section: str | None) -> str:
    """A description of the figure a code cell with ``source`` shows: the output's own plain-text
    alternative when it describes the picture (``plain``, e.g. course_lib.diagrams' charts), else
    the titles and axis labels the code writes, else where the figure stands (``section``)."""
    plain = (plain or "").strip()
    bare = _BARE_REPR.match(plain)
    if plain and not bare:
        return plain
    panels = int(bare.group("axes")) if bare and bare.group("axes") else 0
    shape = f" with {panels} panels" if panels > 1 else ""
    labels = _plot_labels(source)
    if labels:
        return f"Figure{shape}. " + "; ".join(f"{kind}: {text}" for kind, text in labels) + "."
    where = f" in the section “{section}”" if section else ""
    return f"Figure{shape} drawn by the code cell above{where}."


def figure_alt_texts(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Give every code cell that shows an image an alt text (:func:`figure_alt_text`, from the
    first image output) in the cell metadata MyST-NB reads (``mystnb.image.alt``), unless the
    cell sets one already. Modifies and returns ``notebook``."""
    section: str | None = None
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            headings = _HEADING.findall(cell.source)
            section = headings[-1] if headings else section
            continue
        if cell.cell_type != "code":
            continue
        images = [
            output
            for output in cell.get("outputs", [])
            if any(kind in output.get("data", {}) for kind in IMAGE_TYPES)
        ]
        if not images:
            continue
        options = cell.metadata.setdefault("mystnb", {}).setdefault("image", {})
        if not str(options.get("alt", "")).strip():
            plain = images[0].data.get("text/plain")
            plain = "".join(plain) if isinstance(plain, list) else plain
            options["alt"] = figure_alt_text(cell.source, plain, section)
    return notebook
