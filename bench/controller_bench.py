"""Controller at scale: peak RSS, initial sync, longest event-loop stall, idle requests per second.

Loads the API emulator (tests/servers/kube.py, over real HTTP) with N unrelated Secrets and M
``model-source`` namespaces (a model-source Secret plus its data connection each; the unrelated Secrets
are spread over the same namespaces), then runs ``modelferry controller`` as a fresh child process
against it and reports:

- peak RSS of the child, polled from /proc/<pid>/status (VmRSS) every 20 ms;
- initial sync: start of the child until every model-source has its Job;
- longest event-loop stall, two ways: the slowest answer of the controller's /healthz, polled every
  20 ms from a separate process (wall clock: on a loaded machine this includes CPU starvation), and the
  controller's own gauges: the most CPU time its loop spent between two turns of a 50 ms timer
  (``loop_busy_max_ms``: a stall, whatever the machine's load) and the timer's worst delay
  (``loop_lag_max_ms``);
- idle requests per second over a window after sync, with every Job still Pending, and again after
  every Job was marked Succeeded (resync is set to 10 s, so the window holds a full resync).

``--code DIR`` runs the controller from another checkout (e.g. main, for a before/after comparison).
Quick run: ``--unrelated 5000 --sources 100 --idle 12``. Full: the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers.kube import KubeEmulator  # noqa: E402

PAYLOAD = {"tls.crt": "x" * 400, "token": "y" * 120, "ca.crt": "z" * 200}  # ~1 KiB per unrelated Secret


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


async def load(emu: KubeEmulator, unrelated: int, sources: int) -> None:
    for i in range(sources):
        ns = f"team-{i:04d}"
        await emu.put_object("v1", "secrets", {
            "metadata": {"name": "demo-models", "namespace": ns},
            "stringData": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s" * 16, "AWS_S3_BUCKET": "models"},
        })  # fmt: skip
        await emu.put_object("v1", "secrets", {
            "metadata": {"name": "model-source", "namespace": ns},
            "stringData": {"S3_SYNC_SRC__PATH": f"s3://src/m{i}/", "S3_SYNC_SRC__ENDPOINT": "http://minio:9000"},
        })  # fmt: skip
    spread = max(1, sources)
    for i in range(unrelated):
        await emu.put_object("v1", "secrets", {
            "metadata": {"name": f"unrelated-{i:06d}", "namespace": f"team-{i % spread:04d}",
                         "labels": {"app": "other"}},
            "stringData": PAYLOAD,
        })  # fmt: skip
    emu.compact()  # the history of the load is not needed (and holds a copy of everything)


async def settle(emu: KubeEmulator, reason: str, count: int, deadline: float) -> None:
    """Until ``count`` Events with ``reason`` exist (the reaction to the last change is over), plus 2 s."""
    while time.monotonic() < deadline:
        if sum(1 for e in emu.all("v1", "events") if e.get("reason") == reason) >= count:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)


async def loop_metrics(port: int) -> dict[str, Any]:
    """The controller's own event-loop stall gauges (None from a controller without them)."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    out: dict[str, Any] = {"loop_busy_max_ms": None, "loop_lag_max_ms": None}
    for line in text.splitlines():
        for metric, key in (
            ("event_loop_busy_seconds_max", "loop_busy_max_ms"),
            ("event_loop_lag_seconds_max", "loop_lag_max_ms"),
        ):
            if line.startswith(f"modelferry_controller_{metric} "):
                out[key] = round(float(line.split()[1]) * 1000)
    return out


def jobs(emu: KubeEmulator) -> int:
    return len(emu.all("batch/v1", "jobs"))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    emu = KubeEmulator(garbage_collect=False)
    url = await emu.start()
    t0 = time.monotonic()
    await load(emu, args.unrelated, args.sources)
    load_s = time.monotonic() - t0
    port = free_port()
    code = str(Path(args.code).resolve())  # noqa: ASYNC240 - once, before the measurement
    env = {
        **os.environ,
        "PYTHONPATH": code,
        "MODELFERRY_LOG_LEVEL": "WARNING",
        "MODELFERRY_CONTROLLER__API_URL": url,
        "MODELFERRY_CONTROLLER__METRICS_HOST": "127.0.0.1",
        "MODELFERRY_CONTROLLER__METRICS_PORT": str(port),
        "MODELFERRY_CONTROLLER__LEASE_NAMESPACE": "modelferry",
        "MODELFERRY_CONTROLLER__IDENTITY": "bench",
        "MODELFERRY_CONTROLLER__RESYNC_SECONDS": "10",
        "MODELFERRY_CONTROLLER__AGGREGATE_MODELS": "false",
        "MODELFERRY_CONTROLLER__TRAINING__ENABLED": "false",
    }
    cmd = [sys.executable, "-c", "from modelferry.cli.main import main; main()", "controller"]
    started = time.monotonic()
    child = subprocess.Popen(cmd, env=env, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: ASYNC220
    # The probe is a process of its own: this one's event loop is busy serving the emulator.
    probe = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, __file__, "--probe", str(child.pid), str(port)], stdout=subprocess.PIPE
    )
    result: dict[str, Any] = {"unrelated": args.unrelated, "sources": args.sources, "code": args.code,
                              "load_s": round(load_s, 1)}  # fmt: skip
    try:
        deadline = started + args.timeout
        while jobs(emu) < args.sources and time.monotonic() < deadline and child.poll() is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        synced = jobs(emu) >= args.sources
        result["initial_sync_s"] = round(time.monotonic() - started, 2) if synced else None
        result["jobs"] = jobs(emu)
        result["exit_code"] = child.poll()
        if synced and child.poll() is None:
            await settle(emu, "JobCreated", args.sources, deadline)
            before = len(emu.requests)
            await asyncio.sleep(args.idle)
            result["idle_rps_pending"] = round((len(emu.requests) - before) / args.idle, 2)
            for job in list(emu.all("batch/v1", "jobs")):
                meta = job["metadata"]
                await emu.set_status("batch/v1", "jobs", meta["namespace"], meta["name"],
                                     {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})  # fmt: skip
            await settle(emu, "SyncSucceeded", args.sources, time.monotonic() + args.timeout)
            before = len(emu.requests)
            await asyncio.sleep(args.idle)
            result["idle_rps_succeeded"] = round((len(emu.requests) - before) / args.idle, 2)
            result.update(await loop_metrics(port))
    finally:
        child.terminate()  # the emulator keeps serving while it drains and releases the Lease
        try:
            _, err = await asyncio.to_thread(child.communicate, timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            _, err = child.communicate()
        out, _ = await asyncio.to_thread(probe.communicate, timeout=60)  # it ends with the child
        probed = json.loads(out or "{}")
        await emu.stop()
    result["peak_rss_mib"] = round(probed.get("peak_kib", 0) / 1024, 1)
    result["longest_stall_ms"] = round(probed.get("stall_s", 0) * 1000)
    if result.get("exit_code") not in (None, 0) or os.environ.get("BENCH_STDERR"):
        result["stderr_tail"] = err.decode(errors="replace")[-600:]
    return result


def probe(pid: int, port: int) -> None:
    """Until ``pid`` exits: poll its RSS and time its /healthz every 20 ms; print the peaks as JSON."""
    import http.client

    peak, stall = 0, 0.0
    conn: http.client.HTTPConnection | None = None
    while os.path.exists(f"/proc/{pid}") and rss_kib(pid):
        peak = max(peak, rss_kib(pid))
        t = time.monotonic()
        try:
            conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
        except OSError:  # refused (not up yet): at once; timed out or cut by the exit: a stall all the same
            conn = None
        stall = max(stall, time.monotonic() - t)
        time.sleep(0.02)
    print(json.dumps({"peak_kib": peak, "stall_s": stall}))


def main() -> None:
    if sys.argv[1:2] == ["--probe"]:
        probe(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unrelated", type=int, default=50_000, help="unrelated Secrets")
    parser.add_argument("--sources", type=int, default=1_000, help="model-source namespaces")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of each idle window")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on the initial sync after this")
    parser.add_argument("--code", default=str(ROOT), help="checkout whose controller runs (PYTHONPATH)")
    parser.add_argument("--quick", action="store_true", help="5,000 unrelated, 100 sources, 12 s windows")
    args = parser.parse_args()
    if args.quick:
        args.unrelated, args.sources, args.idle = min(args.unrelated, 5000), 100, 12.0
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
