"""Peak RSS of ``modelferry sync`` over a generated tree of up to millions of files (Hub tree and S3 prefix).

The tree is made up on the fly by ``tests/servers/synthetic_tree.py`` (started here as its own
process, so its memory is not counted): file ``n`` is ``d{n // 1000:04d}/f{n:07d}.bin``, 4-64 bytes.
Each case runs ``modelferry sync`` in a fresh process; peak RSS is its own VmHWM, polled every 20 ms
(see ``sync_bench.run_once``).

Cases:
- ``hub-skip``: ``hf://bench/model -> s3://full/out --trust-size``; ``s3-skip``: ``s3://bench/model ->
  s3://full/out`` (same MD5s). The target already lists every file, so the whole pipeline runs
  (both listings, the plan, a 1-line-per-file manifest uploaded last) without moving file bytes:
  this is how a 1,000,000-file tree is measured on a 2-core machine in minutes.
- ``hub-copy``, ``s3-copy``: the same sources into a fresh local directory (every byte moved,
  verified, fsynced and renamed): for smaller trees.

    python bench/big_tree.py --files 50000 200000 1000000 --cases hub-skip s3-skip
    python bench/big_tree.py --files 20000 100000 --cases hub-copy s3-copy [--modelferry-src OTHER_CHECKOUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sync_bench import run_once

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

CASES = {
    "hub-skip": ["hf://bench/model", "s3://full/out", "--hf-endpoint", "{url}", "--trust-size"],
    "s3-skip": ["s3://bench/model", "s3://full/out", "--source-endpoint", "{url}"],
    "hub-copy": ["hf://bench/model", "{dir}", "--hf-endpoint", "{url}"],
    "s3-copy": ["s3://bench/model", "{dir}", "--source-endpoint", "{url}", "--anonymous"],
}


def serve(files: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.synthetic_tree", "--files", str(files)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"the synthetic tree server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{line.split()[-1]}"


def run(case: str, files: int, url: str, scratch: Path, src: Path | None, label: str) -> dict[str, object]:
    target = scratch / f"out-{case}-{files}"
    args = [a.format(url=url, dir=target) for a in CASES[case]]
    if "s3://" in " ".join(args):
        args += ["--target-endpoint", url, "--addressing-style", "path"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
        env["MF_BENCH_CWD"] = str(src)
    argv = [sys.executable, "-m", "modelferry", "sync", *args, "--json"]
    log = scratch / f"log-{case}-{files}.txt"
    code, seconds, peak, cpu, _ = run_once(argv, env, log)
    shutil.rmtree(target, ignore_errors=True)
    text = log.read_text(errors="replace")
    if code:
        print(text[-3000:], file=sys.stderr)
    return {
        "case": case,
        "files": files,
        "exit": code,
        "seconds": round(seconds, 1),
        "files_per_s": round(files / seconds),
        "peak_rss_mib": round(peak, 1),
        "cpu_s": round(cpu, 1),
        "code": label,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["hub-skip", "s3-skip"])
    parser.add_argument("--modelferry-src", type=Path, default=None, help="run modelferry from this source tree")
    parser.add_argument("--label", default="this checkout", help="what the code is, for the JSON (e.g. before)")
    parser.add_argument("--json", type=Path, default=None, help="append the results here (JSON lines)")
    args = parser.parse_args()
    print(
        "| case | files | seconds | files/s | peak RSS MiB | CPU s | exit |\n|---|---|---|---|---|---|---|", flush=True
    )
    with tempfile.TemporaryDirectory(prefix="mf-big-") as name:
        for files in args.files:
            server, url = serve(files)
            try:
                for case in args.cases:
                    row = run(case, files, url, Path(name), args.modelferry_src, args.label)
                    print(
                        f"| {row['case']} | {files} | {row['seconds']} | {row['files_per_s']} | {row['peak_rss_mib']} "
                        f"| {row['cpu_s']} | {row['exit']} |",
                        flush=True,
                    )
                    if args.json:
                        with args.json.open("a") as out:
                            out.write(json.dumps(row) + "\n")
            finally:
                server.kill()
                server.wait()


if __name__ == "__main__":
    main()
