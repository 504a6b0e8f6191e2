"""Running a :class:`ServeApp` on a socket: in the foreground (the CLI) or on a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from modelferry.errors import RetryableError, UsageError
from modelferry.serve.api import ServeApp


async def _start(serve_app: ServeApp, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(serve_app.app(), access_log=None, handle_signals=False, shutdown_timeout=10)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno in (13, 99):  # EACCES, EADDRNOTAVAIL: fix the flags
            raise UsageError(
                f"cannot listen on {host}:{port}: {exc.strerror}", hint="Pick another --host/--port"
            ) from None
        raise RetryableError(
            f"cannot listen on {host}:{port}: {exc.strerror}", hint="Is another server on it?"
        ) from None
    server: Any = site._server  # aiohttp keeps the bound sockets here; port 0 picks a free one
    bound = server.sockets[0].getsockname()[1] if server and server.sockets else port
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound}"


async def serve_forever(serve_app: ServeApp, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Serve until SIGTERM or SIGINT, then finish the requests in flight (up to 10 s) and return."""
    runner, url = await _start(serve_app, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        on_ready(url)
        await stop.wait()
    finally:
        await runner.cleanup()


class BackgroundServer:
    """A server on its own thread and event loop (``modelferry demo`` and tests); a context manager."""

    def __init__(self, serve_app: ServeApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.serve_app, self.host, self.port = serve_app, host, port
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._main, name="modelferry-serve", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner, self.url = self._loop.run_until_complete(_start(self.serve_app, self.host, self.port))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> str:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self.url

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
