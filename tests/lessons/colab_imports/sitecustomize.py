"""Simulate a Colab runtime that has only what a lesson's install cell installs.

A lesson's install cell installs ``course_lib`` with at most one extra (``[dp]``, ``[fl]`` or
``[he]``, see ``pyproject.toml``); Colab ships neither the others nor their dependencies. This
machine has every extra installed, so a lesson that imports, say, ``phe`` without installing
``[he]`` would pass here and fail in Colab. Put this folder first on ``PYTHONPATH`` and list
import names in ``COURSE_BLOCK_IMPORTS`` (comma-separated): Python runs this file at start-up
(it is the ``sitecustomize`` module, see :mod:`site`), and every later ``import phe`` — in the
process and in any child process inheriting the environment (Flower SuperNodes,
``torch.distributed`` parties) — raises :class:`ModuleNotFoundError` naming the package and saying
it is blocked. Without ``COURSE_BLOCK_IMPORTS`` this file does nothing.

At start-up it uses the standard library only and reads nothing but the environment variable.
The tests compute what to block with :func:`blocked_imports` (from the installed packages'
metadata) and the kernel environment with :func:`blocking_environment`; they load this file by
path (it is no package).

As the ``sitecustomize`` of a process it hides any other ``sitecustomize`` later on
``sys.path``; the course's virtual environment has none.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

ENV_VAR = "COURSE_BLOCK_IMPORTS"
HERE = Path(__file__).resolve().parent
#: The extras a lesson's install cell may ask for; "" is the core (no extra).
EXTRAS = ("", "dp", "fl", "he")
#: What Colab's default runtime ships (../shared/notes/colab.md, from Colab's published package
#: list), and what runs a notebook at all: never blocked, nor anything they depend on.
COLAB_PREINSTALLED = (
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "ipython",
    "ipykernel",
    "ipywidgets",
    "jupyter-server",
    "notebook",
    "matplotlib",
    "scipy",
    "scikit-learn",
    "mlxtend",
    "tqdm",
    "cryptography",
    "grpcio",
    "protobuf",
)


class BlockedImportError(ModuleNotFoundError):
    """An import of a package that the simulated Colab runtime does not have."""


class ImportBlocker(importlib.abc.MetaPathFinder):
    """A meta-path finder that refuses the top-level packages ``names`` and their submodules."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: object = None
    ) -> None:
        """Raise :class:`BlockedImportError` for a blocked package; otherwise defer (None)."""
        top = fullname.partition(".")[0]
        if top in self.names:
            raise BlockedImportError(
                f"No module named {top!r}: blocked to simulate Colab, where this lesson's install "
                f"cell does not install it ({ENV_VAR}={','.join(sorted(self.names))})",
                name=top,
            )
        return None


def install(names: Iterable[str]) -> ImportBlocker | None:
    """Put an :class:`ImportBlocker` for ``names`` first on :data:`sys.meta_path` (none if
    ``names`` is empty); returns it."""
    names = [name.strip() for name in names if name.strip()]
    if not names:
        return None
    blocker = ImportBlocker(names)
    sys.meta_path.insert(0, blocker)
    return blocker


def _requirement_closure(requirements: Iterable[str]) -> set[str]:
    """The canonical names of the installed distributions ``requirements`` pull in, transitively
    (extras and environment markers honoured; requirements not installed here are skipped)."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[tuple[str, frozenset[str]]] = set()
    stack = [Requirement(text) for text in requirements]
    while stack:
        requirement = stack.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            continue
        for text in distribution.requires or []:
            dependency = Requirement(text)
            wanted = requirement.extras or {""}
            if dependency.marker is None or any(
                dependency.marker.evaluate({"extra": extra}) for extra in wanted
            ):
                stack.append(dependency)
    return {name for name, _ in seen}


def blocked_imports(extra: str, pyproject: Path | None = None) -> list[str]:
    """The top-level import names a lesson installing ``course_lib[extra]`` cannot import in
    Colab (``extra`` is ``""`` for the core, or ``"dp"``, ``"fl"``, ``"he"``).

    They are the modules of the distributions that the *other* extras pull in (transitively)
    and that neither the core, ``extra`` nor :data:`COLAB_PREINSTALLED` pull in. A top-level name
    shared by several distributions (a namespace such as ``google``) is blocked only when all of
    them are. Computed from this environment's installed metadata. ValueError for another extra.
    """
    import importlib.metadata as metadata
    import tomllib

    from packaging.utils import canonicalize_name

    if extra not in EXTRAS:
        raise ValueError(f"extra must be one of {EXTRAS}, got {extra!r}")
    pyproject = pyproject or HERE.parents[2] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    core = list(project["dependencies"])
    optional = project["optional-dependencies"]
    allowed = _requirement_closure([*core, *optional.get(extra, []), *COLAB_PREINSTALLED])
    others = _requirement_closure(
        [req for name in EXTRAS[1:] if name != extra for req in optional[name]]
    )
    blocked = others - allowed
    providers = metadata.packages_distributions()
    return sorted(
        name
        for name, distributions in providers.items()
        if name.isidentifier() and all(canonicalize_name(d) in blocked for d in distributions)
    )


def blocking_environment(names: Iterable[str], base: Mapping[str, str]) -> dict[str, str]:
    """``base`` (e.g. ``os.environ``) with this folder first on ``PYTHONPATH`` and ``names`` in
    ``COURSE_BLOCK_IMPORTS``: the environment of a process (or kernel) that cannot import them."""
    path = os.pathsep.join(p for p in (str(HERE), base.get("PYTHONPATH", "")) if p)
    return {**base, "PYTHONPATH": path, ENV_VAR: ",".join(sorted(names))}


if __name__ == "sitecustomize":
    install(os.environ.get(ENV_VAR, "").split(","))
