"""Course-wide conventions every lesson follows (checked on the committed notebooks)."""

from __future__ import annotations

import re

import nbformat
import pytest

from course_lib.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
ADDRESS = re.compile(r"0x[0-9a-f]{6,}")


def test_lessons_are_numbered_in_order() -> None:
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", p.name) for p in NOTEBOOKS)
    assert numbers == list(range(len(numbers))), "lessons must be numbered 00, 01, ... without gaps"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_conventions(path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    first, second = nb.cells[0], nb.cells[1]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {path.name[:2]} · ")
    badge = f"https://colab.research.google.com/github/private-ai-course/private-ai/blob/main/notebooks/{path.name}"
    assert badge in first.source, "the Colab badge must open this very notebook"
    assert second.cell_type == "code" and '"google.colab" in sys.modules' in second.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_executed_in_order_without_errors(path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    counts = [c.execution_count for c in code]
    assert None not in counts, "commit the notebook executed (make execute)"
    assert counts == list(range(1, len(counts) + 1)), "restart and run all before committing"
    for cell in code:
        for output in cell.outputs:
            assert output.output_type != "error", f"stored error: {output.get('ename')}"
        if cell.source.startswith("# NBVAL_CHECK_OUTPUT"):
            text = "".join(
                o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                for o in cell.outputs
            )
            assert not ADDRESS.search(text), "a checked cell shows a memory address"
            assert "it/s]" not in text and "s/it]" not in text, (
                "a checked cell shows a progress bar"
            )
