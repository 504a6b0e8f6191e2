"""Peak RSS and files/s of ``modelferry sync`` for a tree of many small files (local -> local).

Generates N files of 1 KiB (bench/data/, gitignored) and copies them with ``modelferry sync`` in a
fresh process per run; peak RSS is the child's own VmHWM (see sync_bench.run_once). The per-file
figure is (peak RSS - the same command's peak for a 1-file tree) / N.

    python bench/many_files.py --files 20000 100000 [--modelferry-src OTHER_CHECKOUT]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from sync_bench import run_once

HERE = Path(__file__).resolve().parent


def tree(root: Path, files: int) -> Path:
    """``files`` files of 1 KiB in 100 directories (reused when present)."""
    top = root / f"tree-{files}"
    marker = top / ".complete"
    if marker.exists():
        return top
    for i in range(files):
        d = top / f"d{i % 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:07d}.bin").write_bytes(i.to_bytes(8, "little") * 128)
    marker.write_text("")
    return top


def run(files: int, data: Path, scratch: Path, src: Path | None) -> tuple[float, float, float]:
    """(seconds, peak RSS MiB, files/s) of one sync of the ``files``-file tree."""
    source = tree(data, files)
    target = scratch / f"out-{files}"
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
        env["MF_BENCH_CWD"] = str(src)
    argv = [sys.executable, "-m", "modelferry", "sync", str(source), str(target), "--json", "--exclude", ".complete"]
    code, seconds, peak, _, _ = run_once(argv, env, scratch / f"log-{files}.txt")
    if code:
        print((scratch / f"log-{files}.txt").read_text()[-2000:], file=sys.stderr)
        raise SystemExit(f"sync of {files} files failed with exit {code}")
    shutil.rmtree(target, ignore_errors=True)
    return seconds, peak, files / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--data", type=Path, default=HERE / "data" / "many")
    parser.add_argument("--modelferry-src", type=Path, default=None, help="run modelferry from this source tree")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mf-many-", dir=args.data.parent) as name:
        scratch = Path(name)
        _, base, _ = run(1, args.data, scratch, args.modelferry_src)
        print(f"| files | seconds | files/s | peak RSS MiB | KiB per file above a 1-file run ({base:.0f} MiB) |")
        print("|---|---|---|---|---|")
        for files in args.files:
            seconds, peak, rate = run(files, args.data, scratch, args.modelferry_src)
            print(
                f"| {files} | {seconds:.1f} | {rate:.0f} | {peak:.0f} | {(peak - base) * 1024 / files:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
