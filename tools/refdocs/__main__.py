"""``python -m tools.refdocs [--check] [--out DIR]``: write (or check) the generated reference pages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.refdocs import OUT, generate, stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.refdocs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is not current")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the pages go [{OUT}]")
    args = parser.parse_args(argv)
    pages = generate()
    out: Path = args.out
    if args.check:
        behind = stale(out, pages)
        for name in behind:
            sys.stderr.write(f"{out / name} is not what the code generates; run: python -m tools.refdocs\n")
        return 1 if behind else 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in pages.items():
        (out / name).write_text(text)
    for name in stale(out, pages):  # pages no generator writes any more
        (out / name).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
