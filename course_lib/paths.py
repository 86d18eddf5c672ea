"""Where the course keeps things on disk."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (``course_lib`` is installed in editable mode from it).
REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The directory for datasets: ``$COURSE_DATA_DIR`` if set, else ``data/`` in the repository.

    Downloads land here in torchvision's layout (``data/MNIST/raw/...``) and are git-ignored.
    """
    path = Path(os.environ.get("COURSE_DATA_DIR", REPO_ROOT / "data"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def offline() -> bool:
    """True when ``COURSE_OFFLINE=1`` asks the course never to touch the network (CI sets it)."""
    return os.environ.get("COURSE_OFFLINE", "").strip().lower() in {"1", "true", "yes"}
