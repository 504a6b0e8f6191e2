"""``python -m tools.bundle [--check] [--validate]``: write, check or validate the OLM bundle under bundle/."""

from __future__ import annotations

import argparse
import sys

from tools.bundle import BUNDLE, ROOT, generate, stale
from tools.bundle.validate import csv_schema, olm_schema_path, validate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bundle", description=__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a bundle file is not current")
    parser.add_argument(
        "--validate", action="store_true", help="validate the bundle (the CSV against OLM's schema where it is kept)"
    )
    args = parser.parse_args(argv)
    files = generate(ROOT)
    if args.check or args.validate:
        code = 0
        if args.check:
            for path in stale(files, ROOT):
                sys.stderr.write(f"{path} is not what manifests/ generate; run: python -m tools.bundle\n")
                code = 1
        if args.validate:
            schema_path = olm_schema_path(ROOT)
            schema = csv_schema(schema_path) if schema_path.is_file() else None
            if schema is None:
                sys.stderr.write(f"OLM's CSV schema is not at {schema_path}: checking the bundle without it\n")
            for problem in validate(BUNDLE, ROOT, schema):
                sys.stderr.write(f"bundle: {problem}\n")
                code = 1
        return code
    for path in stale(files, ROOT):
        if path not in files:  # a file no generator writes any more
            (ROOT / path).unlink()
    for path, text in files.items():
        (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / path).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
