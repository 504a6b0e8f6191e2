"""``python -m tools.crds [--check]``: write manifests/crds/*.yaml from the typed API, or check them."""

from __future__ import annotations

import sys

from tools.crds import check, files


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        return check()
    if argv:
        print("usage: python -m tools.crds [--check]", file=sys.stderr)
        return 2
    for path, text in files().items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
