"""A TCP proxy that adds a fixed one-way delay in each direction, for benchmarks at real round-trip times.

Every chunk read from one side is written to the other ``delay`` seconds after it arrived, so a
request/response exchange takes ``2 * delay`` longer (``--rtt-ms 20`` adds 20 ms to every round
trip). Reading goes on while earlier chunks wait out their delay, so throughput is kept (bytes in
flight per direction: rate x delay, capped at :data:`MAX_WAITING` bytes, past which the proxy stops
reading and TCP pushes back); bytes leave in the order they came; nothing waits for a whole
response. What it does not model: the proxy acknowledges bytes at once, so TCP's window and slow
start see a loopback round trip, not the delayed one (a long fat pipe with a large enough window).

    python bench/latency_proxy.py --upstream 127.0.0.1:8080 --rtt-ms 20 [--port 0]

prints ``listening on PORT`` once it accepts connections; runs until killed. :func:`run_proxy`
starts it as a child process (its own interpreter, so its CPU does not share a GIL with the caller).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHUNK = 256 << 10  # bytes per read
MAX_WAITING = 32 << 20  # bytes per direction waiting out their delay before reading pauses


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it was read; EOF is passed on."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=max(1, MAX_WAITING // CHUNK))

    async def read_side() -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                await queue.put((loop.time() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((loop.time() + delay, b""))

    async def write_side() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()  # half-close: the other direction may still be talking
                return
            writer.write(data)
            await writer.drain()

    reading = asyncio.ensure_future(read_side())
    try:
        await write_side()
    except (ConnectionError, OSError):
        pass
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reading


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _serve(port: int, upstream: tuple[str, int], delay: float) -> None:
    accepted = 0

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        try:
            server_r, server_w = await asyncio.open_connection(*upstream, limit=CHUNK)
        except OSError:
            client_w.close()
            return
        await asyncio.sleep(2 * delay)  # the handshake: a new connection costs a round trip, as it does for real
        _nodelay(client_w)
        _nodelay(server_w)
        try:
            await asyncio.gather(_pump(client_r, server_w, delay), _pump(server_r, client_w, delay))
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            for w in (client_w, server_w):
                with contextlib.suppress(Exception):
                    w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=CHUNK, backlog=1024)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()
    print(f"latency proxy: {accepted} connections accepted", file=sys.stderr, flush=True)


@contextlib.contextmanager
def run_proxy(upstream_url: str, rtt_ms: float) -> Iterator[str]:
    """Start the proxy in front of ``upstream_url`` (``http://host:port``); yields the proxied base URL."""
    scheme, rest = upstream_url.split("://", 1)
    hostport = rest.split("/", 1)[0]
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--upstream", hostport, "--rtt-ms", str(rtt_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"latency proxy did not start: {line!r}")
        yield f"{scheme}://127.0.0.1:{int(line.split()[-1])}"
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="host:port to forward to")
    parser.add_argument("--rtt-ms", type=float, required=True, help="milliseconds added to every round trip")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free one)")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, (host or "127.0.0.1", int(port)), args.rtt_ms / 2000))


if __name__ == "__main__":
    main()
