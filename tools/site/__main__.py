"""``python -m tools.site [--edition student|instructor] [--out DIR]`` — see tools/site/build.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from tools.site.build import build_site
from tools.site.editions import EDITIONS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the course website (one edition).")
    parser.add_argument("--edition", choices=sorted(EDITIONS), default="student")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: build/site/EDITION)"
    )
    args = parser.parse_args(argv)
    built = build_site(args.edition, args.out)
    print(
        f"Wrote the {built.edition.label} ({len(built.lessons)} lessons) in "
        f"{built.seconds:.0f} s: open {built.html_dir / 'index.html'}"
    )


if __name__ == "__main__":
    main()
