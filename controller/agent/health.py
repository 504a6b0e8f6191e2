"""HTTP endpoints: /metrics, /healthz (process up), /readyz (API reachable, models root usable), /livez (workers)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from modelferry.controller.agent.metrics import AgentMetrics

Check = Callable[[], Awaitable[str | None]]  # None: healthy; else the reason


def root_usable(root: Path, read_only: bool) -> str | None:
    """Writable (a file can be created and removed), or readable when declared read-only."""
    if not root.is_dir():
        return f"models root {root} does not exist"
    if read_only:
        return None if os.access(root, os.R_OK | os.X_OK) else f"models root {root} is not readable"
    try:
        with tempfile.NamedTemporaryFile(dir=root, prefix=".modelferry-probe-"):
            pass
    except OSError as exc:
        return f"models root {root} is not writable: {exc.strerror}"
    return None


def build_app(metrics: AgentMetrics, ready_checks: list[Check], live_checks: list[Check]) -> web.Application:
    async def run(checks: list[Check]) -> web.Response:
        failures = [r for r in await asyncio.gather(*(c() for c in checks)) if r]
        if failures:
            return web.Response(status=503, text="\n".join(failures) + "\n")
        return web.Response(text="ok\n")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        return await run(ready_checks)

    async def livez(_: web.Request) -> web.Response:
        return await run(live_checks)

    async def metrics_handler(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", metrics_handler)
    return app


async def serve(app: web.Application, port: int, host: str = "0.0.0.0") -> tuple[web.AppRunner, int]:  # noqa: S104 - a pod port
    """Start the server; returns the runner (to clean up) and the bound port (0 picks one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)
