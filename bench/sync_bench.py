"""Benchmark ``modelferry sync`` against snapshot_download and boto3 on one machine.

Generates a model of safetensors shards (bench/data/, gitignored), serves it with nginx on
two ports (one with a per-connection ``limit_rate``, one without), then runs each tool in its
own subprocess into a fresh directory, ``--runs`` times, keeping the best wall time. Peak RSS
is the child's own high-water mark (``VmHWM`` in /proc/<pid>/status, polled every 20 ms):
``ru_maxrss`` from ``wait4`` is not used because a forked child starts with its parent's peak and
keeps it across exec. Every copy is checked byte for byte (sha256 of the target files against the
generator's) outside the timed region. The ``https`` scenario is the unlimited port behind TLS with a
private CA, which each tool is given its own documented way: modelferry ``--ca-bundle``, boto3
``AWS_CA_BUNDLE``, snapshot_download ``SSL_CERT_FILE`` (the only way its client honours).

    .venv/bin/python bench/sync_bench.py --size-gb 2
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gen_model import GeneratedFile, GiB, generate, warm
from latency_proxy import run_proxy
from nginx_server import run_nginx

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
TOOLS = ("modelferry-s3", "boto3", "modelferry-hf", "snapshot_download")  # each compared pair side by side


@dataclass
class Run:
    """One timed run of one tool."""

    tool: str
    scenario: str
    seconds: float
    mb_s: float
    files_s: float
    peak_rss_mb: float
    cpu_s: float
    wait4_maxrss_mb: float  # what ru_maxrss says (inherits the parent's peak): shown, never used
    load: float
    ok: bool
    note: str = ""
    n: int = 0  # which repetition (0, 1, ...)
    client_cpu_s_per_gb: float = 0.0  # the tool's CPU seconds per 10^9 bytes: what a user on a real network pays
    server_cpu_s: float = 0.0  # nginx's workers during the run (serving, and encrypting for https)
    rtt_ms: float | None = None  # round trip added by bench/latency_proxy.py (None: no proxy)


def command(tool: str, url: str, target: Path, ca_file: str | None = None) -> list[str]:
    """The command line that runs ``tool`` against ``url`` into ``target`` (``ca_file``: trust for https)."""
    py = sys.executable
    tls = ["--ca-bundle", ca_file] if ca_file and url.startswith("https:") else []
    if tool == "modelferry-hf":
        return [py, "-m", "modelferry", "sync", "hf://bench/model", str(target), "--hf-endpoint", url, "--json", *tls]
    if tool == "modelferry-s3":
        return [
            py,
            "-m",
            "modelferry",
            "sync",
            "s3://bench/model",
            str(target),
            "--source-endpoint",
            url,
            "--source-region",
            "us-east-1",
            "--anonymous",
            "--addressing-style",
            "path",
            "--json",
            *tls,
        ]
    if tool == "snapshot_download":
        return [py, str(HERE / "competitors.py"), "hf", url, str(target)]
    if tool == "boto3":
        return [py, str(HERE / "competitors.py"), "s3", url, str(target)]
    raise ValueError(tool)


def high_water_mib(pid: int) -> float | None:
    """The process's own peak RSS (VmHWM) in MiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_once(argv: list[str], env: dict[str, str], log: Path) -> tuple[int, float, float, float, float]:
    """Run ``argv``: (exit status, seconds, peak RSS MiB, CPU seconds user+system, ru_maxrss MiB)."""
    peak = 0.0
    done = threading.Event()

    def poll(pid: int) -> None:
        nonlocal peak
        while not done.wait(0.02):
            value = high_water_mib(pid)
            if value is not None:
                peak = max(peak, value)

    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=env.get("MF_BENCH_CWD", REPO_ROOT)
        )
        watcher = threading.Thread(target=poll, args=(proc.pid,), daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        done.set()
        watcher.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, seconds, peak, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def verify(files: list[GeneratedFile], target: Path, suffix: str = "") -> str:
    """'' when every file is there (as ``target/path + suffix``) with the right sha256, else what is wrong."""
    for f in files:
        path = target / f"{f.path}{suffix}"
        if not path.is_file() or path.stat().st_size != f.size:
            return f"{f.path}: missing or wrong size"
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(16 << 20):
                digest.update(chunk)
        if digest.hexdigest() != f.sha256:
            return f"{f.path}: sha256 mismatch"
    return ""


def bench(args: argparse.Namespace) -> list[Run]:
    data = args.data
    print(f"generating {args.size_gb} GiB under {data} (reused when present)", flush=True)
    if args.small_files:
        print(f"small-file tree: {args.small_files} files of 1-{args.max_kib} KiB", flush=True)
        files = generate(data, 0, 0, small_files=args.small_files, max_kib=args.max_kib)
    else:
        files = generate(data, int(args.size_gb * GiB), args.shards)
    warm(data, files)  # no tool pays for reading the model from disk (the first one would, alone)
    total = sum(f.size for f in files)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="mf-bench-", dir=args.scratch) as scratch_name:
        scratch = Path(scratch_name)
        env = dict(os.environ)
        env.update(
            HF_HOME=str(scratch / "hf-home"),
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            NO_COLOR="1",
            AWS_EC2_METADATA_DISABLED="true",
        )
        env.pop("HF_TOKEN", None)
        if args.modelferry_src:  # another checkout's modelferry (a "before" run); the competitors are unchanged
            env["PYTHONPATH"] = str(args.modelferry_src)
            env["MF_BENCH_CWD"] = str(args.modelferry_src)
        with run_nginx(scratch / "nginx", data, files, args.limit_rate) as endpoints:
            # With --rtt-ms every scenario is also served behind the latency proxy, once per round trip.
            targets = [(s, r) for s in args.scenarios for r in (args.rtt_ms or [None])]
            with contextlib.ExitStack() as proxies:
                urls = {
                    (s, r): proxies.enter_context(run_proxy(getattr(endpoints, s), r))
                    if r  # 0 ms: straight to nginx (a proxy adding nothing would still cost CPU on a shared machine)
                    else getattr(endpoints, s)
                    for s, r in targets
                }
                # Each repetition runs every tool in every scenario back to back (a tool's plain and HTTPS
                # runs, and modelferry and the tool it is compared with, close in time on a shared machine).
                for n in range(args.runs):
                    for tool in args.tools:
                        for scenario, rtt in targets:
                            label = scenario if rtt is None else f"{scenario}+{rtt:g}ms"
                            tool_env = dict(env)
                            if scenario == "https":  # each tool's own documented way to trust a private CA
                                variable = {"boto3": "AWS_CA_BUNDLE", "snapshot_download": "SSL_CERT_FILE"}.get(tool)
                                if variable:
                                    tool_env[variable] = endpoints.ca_file
                            before = endpoints.cpu_seconds()
                            url = urls[(scenario, rtt)]
                            run = _one(
                                tool, label, url, n, files, total, scratch, tool_env, args.keep_logs, endpoints.ca_file
                            )
                            run.server_cpu_s = round(endpoints.cpu_seconds() - before, 2)
                            run.rtt_ms = rtt
                            print(json.dumps(asdict(run)), flush=True)
                            runs.append(run)
    return runs


def _one(
    tool: str,
    scenario: str,
    url: str,
    n: int,
    files: list[GeneratedFile],
    total: int,
    scratch: Path,
    env: dict[str, str],
    keep_logs: Path | None,
    ca_file: str | None = None,
) -> Run:
    target = scratch / f"out-{tool}-{scenario}-{n}"
    shutil.rmtree(scratch / "hf-home", ignore_errors=True)  # no cache reuse between runs
    log = scratch / f"{tool}-{scenario}-{n}.log"
    os.sync()  # no run pays for writing back what an earlier run left dirty in the page cache
    load = os.getloadavg()[0]  # other work on the machine skews wall time; CPU seconds less so
    code, seconds, rss, cpu, maxrss = run_once(command(tool, url, target, ca_file), env, log)
    problem = f"exit {code}" if code else verify(files, target)
    if keep_logs is not None:
        keep_logs.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, keep_logs / log.name)
    if problem:
        print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
    shutil.rmtree(target, ignore_errors=True)
    run = Run(
        tool,
        scenario,
        round(seconds, 3),
        round(total / seconds / 1e6, 1),
        round(len(files) / seconds, 1),
        round(rss, 1),
        round(cpu, 2),
        round(maxrss, 1),
        round(load, 1),
        not problem,
        problem,
        n,
        round(cpu / (total / 1e9), 2),
    )
    return run


def best(runs: list[Run]) -> dict[tuple[str, str], Run]:
    """The fastest successful run per (tool, scenario)."""
    out: dict[tuple[str, str], Run] = {}
    for r in runs:
        key = (r.tool, r.scenario)
        if r.ok and (key not in out or r.seconds < out[key].seconds):
            out[key] = r
    return out


def median(runs: list[Run], tool: str, scenario: str) -> float:
    """The median MB/s of the successful runs of ``tool`` in ``scenario`` (0 when there are none)."""
    rates = [r.mb_s for r in runs if r.ok and r.tool == tool and r.scenario == scenario]
    return statistics.median(rates) if rates else 0.0


RIVAL = {"boto3": "modelferry-s3", "snapshot_download": "modelferry-hf"}  # ours over the same protocol


def table(runs: list[Run]) -> str:
    """A Markdown table of the best runs with ratios: modelferry-hf / this, and ours / this on the same protocol."""
    top = best(runs)
    lines = [
        "| scenario | tool | best s | MB/s (best) | MB/s (median) | files/s | peak RSS MB | CPU s "
        "| modelferry-hf / this (best, median) | same protocol: ours / this (best, median) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in dict.fromkeys(r.scenario for r in runs):
        for (tool, sc), r in sorted(top.items()):
            if sc != scenario:
                continue
            med = median(runs, tool, scenario)
            cells = []
            for mine in ("modelferry-hf", RIVAL.get(tool)):
                ours = top.get((mine, scenario)) if mine else None
                mine_med = median(runs, mine, scenario) if mine else 0.0
                cells.append(f"{ours.mb_s / r.mb_s:.2f}x, {mine_med / med:.2f}x" if ours and med else "")
            lines.append(
                f"| {scenario} | {tool} | {r.seconds:.2f} | {r.mb_s:.0f} | {med:.0f} | {r.files_s:.0f} | {r.peak_rss_mb:.0f} "
                f"| {r.cpu_s:.1f} | {cells[0]} | {cells[1]} |"
            )
    lines += ["", *ratios(runs)]
    failed = [r for r in runs if not r.ok]
    for r in failed:
        lines.append(f"\nFAILED: {r.tool} ({r.scenario}): {r.note}")
    return "\n".join(lines)


def ratios(runs: list[Run]) -> list[str]:
    """Per repetition: HTTPS over plain HTTP for each tool, and modelferry over the other tool on HTTPS."""
    by = {(r.tool, r.scenario, r.n): r for r in runs if r.ok}
    pairs = [("modelferry-s3", "boto3"), ("modelferry-hf", "snapshot_download")]
    lines = [
        "| run | tool | HTTPS MB/s | plain MB/s | HTTPS / plain | client CPU s/GB (HTTPS, plain) "
        "| server CPU s (HTTPS, plain) | modelferry / other tool, HTTPS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted({r.n for r in runs}):
        for ours, theirs in pairs:
            for tool in (ours, theirs):
                tls, plain = by.get((tool, "https", n)), by.get((tool, "unlimited", n))
                if tls is None:
                    continue
                other = by.get((theirs, "https", n))
                vs = f"{tls.mb_s / other.mb_s:.2f}x" if tool == ours and other else ""
                plain_cols = (
                    (f"{plain.mb_s:.0f}", f"{tls.mb_s / plain.mb_s:.2f}", f"{plain.client_cpu_s_per_gb:.2f}")
                    if plain
                    else ("", "", "")
                )
                lines.append(
                    f"| {n + 1} | {tool} | {tls.mb_s:.0f} | {plain_cols[0]} | {plain_cols[1]} "
                    f"| {tls.client_cpu_s_per_gb:.2f}, {plain_cols[2]} "
                    f"| {tls.server_cpu_s:.1f}, {plain.server_cpu_s if plain else 0:.1f} | {vs} |"
                )
    return lines if len(lines) > 2 else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0, help="GiB of tensor data in the model (default 2)")
    parser.add_argument("--shards", type=int, default=4, help="safetensors shards (default 4)")
    parser.add_argument("--runs", type=int, default=2, help="runs per tool and scenario; the best counts")
    parser.add_argument("--limit-rate", default="50m", help="nginx limit_rate per connection (default 50m)")
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument(
        "--scenarios", nargs="+", default=["limited", "unlimited"], choices=["limited", "unlimited", "https"]
    )
    parser.add_argument("--data", type=Path, default=HERE / "data" / "model", help="where the model is generated")
    parser.add_argument("--scratch", type=Path, default=HERE / "data", help="where targets are written")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy each tool's output here")
    parser.add_argument("--json", type=Path, default=None, help="write every run as JSON here")
    parser.add_argument("--small-files", type=int, default=0, help="a tree of this many small files instead")
    parser.add_argument("--max-kib", type=int, default=16, help="small files are 1 to this many KiB (default 16)")
    parser.add_argument(
        "--rtt-ms",
        type=float,
        nargs="+",
        default=None,
        help="run every scenario behind bench/latency_proxy.py with each of these round trips (e.g. 0 20 80;"
        " 0 goes straight to the server, no proxy)",
    )
    parser.add_argument("--modelferry-src", type=Path, default=None, help="run modelferry from this source tree")
    parser.add_argument("--delete-data", action="store_true", help="delete the generated model at the end")
    args = parser.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)
    runs = bench(args)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    print(table(runs))
    if args.delete_data:
        shutil.rmtree(args.data, ignore_errors=True)


if __name__ == "__main__":
    main()
