"""The student edition: solutions gone, stubs friendly, notebooks valid."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from course_lib.paths import REPO_ROOT
from tools.student_edition import SolutionMarkerError, build_student_edition, main, strip_solutions

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BLOCK = re.compile(r"# BEGIN SOLUTION\n(.*?)\n\s*# END SOLUTION", re.S)


def test_assignment_blocks_keep_their_names() -> None:
    solution = "# BEGIN SOLUTION\nanswer = x + 1\nother: int = 2\n# END SOLUTION"
    source = f"x = 1\n{solution}\ncheck('a', answer)"
    assert strip_solutions(source) == (
        "x = 1\nanswer = ...  # your code here\nother = ...  # your code here\ncheck('a', answer)"
    )


def test_function_bodies_raise_at_their_indentation() -> None:
    source = "def f(x):\n    # BEGIN SOLUTION\n    y = x * 2\n    return y\n    # END SOLUTION\n"
    stub = strip_solutions(source)
    assert stub == 'def f(x):\n    raise NotImplementedError("your code here")'
    namespace: dict = {}
    exec(stub, namespace)
    with pytest.raises(NotImplementedError, match="your code here"):
        namespace["f"](1)


def test_indented_statements_other_than_assignments_raise() -> None:
    solution = "    # BEGIN SOLUTION\n    x.backward()\n    g = x.grad\n    # END SOLUTION"
    source = f"for x in xs:\n{solution}"
    stub = 'for x in xs:\n    raise NotImplementedError("your code here")'
    assert strip_solutions(source) == stub


def test_top_level_blocks_keep_only_their_final_answer() -> None:
    solution = "# BEGIN SOLUTION\nx = torch.ones(3)\nx.backward()\nanswer = x.grad\n# END SOLUTION"
    stub = strip_solutions(f"{solution}\ncheck('01.gradient', answer)")
    assert stub == "answer = ...  # your code here\ncheck('01.gradient', answer)"
    namespace: dict = {"check": lambda name, value: value}
    exec(stub, namespace)  # runs without raising: Run All carries on to the check
    assert namespace["answer"] is Ellipsis


@pytest.mark.parametrize("final", ["x.backward()", "print(answer)", "self.answer = x.grad"])
def test_top_level_blocks_must_end_with_the_answer(final: str) -> None:
    source = f"x = 1\n# BEGIN SOLUTION\nanswer = x + 1\n{final}\n# END SOLUTION"
    with pytest.raises(SolutionMarkerError, match="line 2 is at the top level.*'answer = ...'"):
        strip_solutions(source)


@pytest.mark.parametrize(
    "broken",
    [
        "# BEGIN SOLUTION\nx = 1\n",
        "x = 1\n# END SOLUTION",
        "# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION",
    ],
)
def test_unbalanced_markers_are_errors(broken: str) -> None:
    with pytest.raises(SolutionMarkerError):
        strip_solutions(broken)


def test_student_edition_of_every_lesson(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--out", str(tmp_path)])
    assert f"Wrote {len(NOTEBOOKS)} student notebooks" in capsys.readouterr().out
    for original_path in NOTEBOOKS:
        student_path = tmp_path / "notebooks" / original_path.name
        student = nbformat.read(student_path, as_version=4)
        nbformat.validate(student)
        original = nbformat.read(original_path, as_version=4)
        assert len(student.cells) == len(original.cells)
        text = "\n".join(cell.source for cell in student.cells)
        assert not re.search(r"^\s*# (BEGIN|END) SOLUTION\s*$", text, re.M)
        code_text = "\n".join(c.source for c in student.cells if c.cell_type == "code")
        assert "NBVAL_CHECK_OUTPUT" not in code_text
        for cell in student.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
        solutions = [block for cell in original.cells for block in BLOCK.findall(cell.source)]
        assert solutions, f"{original_path.name} has no exercises"
        student_code = "\n".join(c.source for c in student.cells if c.cell_type == "code")
        for block in solutions:
            assert block.strip() not in student_code, f"{original_path.name}: a solution survived"
        assert student_code.count("# your code here") + student_code.count(
            '"your code here"'
        ) >= len(solutions)


def test_errors_name_the_notebook_and_cell(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# A lesson"),
        nbformat.v4.new_code_cell("# BEGIN SOLUTION\nmodel.fit()\n# END SOLUTION"),
    ]
    path = tmp_path / "99_broken.ipynb"
    nbformat.write(notebook, path)
    with pytest.raises(SolutionMarkerError, match=r"^99_broken.ipynb: cell 1: the solution block"):
        build_student_edition([path], tmp_path / "out")


def test_default_output_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    written = build_student_edition(NOTEBOOKS[:1], tmp_path / "x")
    assert written == [tmp_path / "x" / "notebooks" / NOTEBOOKS[0].name]
