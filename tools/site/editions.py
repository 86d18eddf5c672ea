"""The site's two editions.

=============  =====================================================  ===========================
edition        lesson pages show                                      "Colab" opens
=============  =====================================================  ===========================
student        the student edition (``tools.student_edition``):      the student branch's copy
               solutions stubbed, no test markers, and the stored
               outputs only where they give no answer away
instructor     the notebooks as committed: solutions, markers and     the instructor's branch
               every stored output
=============  =====================================================  ===========================

The repository and both branches come from the course's one address, ``[tool.private-ai]`` in
``pyproject.toml`` (read by ``tools.colab``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tools import colab

__all__ = ["EDITIONS", "Edition"]


@dataclass(frozen=True)
class Edition:
    """One build of the site."""

    name: colab.Edition  #: "student" or "instructor": the Sphinx tag, the output folder
    label: str  #: shown in the page title
    solutions: bool  #: whether lesson pages show the instructor's solutions

    def branch(self, address: colab.CourseAddress) -> str:
        """The git branch whose notebooks this edition's Colab buttons open."""
        return address.edition_branch(self.name)


EDITIONS = {
    "student": Edition("student", "student edition", solutions=False),
    "instructor": Edition("instructor", "instructor edition", solutions=True),
}
