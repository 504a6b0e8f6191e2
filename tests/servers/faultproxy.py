"""A fault-injecting TCP proxy in front of any HTTP(S) server: the API emulator or a real kube-apiserver.

- :meth:`FaultProxy.cut` ends streaming responses (watches) in the middle of a chunked body: the client
  gets a chunk header announcing more bytes than ever arrive, then the connection closes.
- :meth:`FaultProxy.refuse` stops listening and drops every connection (clients get ECONNREFUSED);
  :meth:`FaultProxy.accept` listens again on the same port.
- :meth:`FaultProxy.fail` answers matching requests itself with an error status (5xx, 429 with
  ``Retry-After``) instead of forwarding them (plain HTTP only: TLS bytes cannot be read).

Works at the byte level, so TLS upstreams work too for ``cut`` and ``refuse`` (the client then sees a
broken TLS stream). ``requests`` counts forwarded requests per method and path (plain HTTP only).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Rule:
    """Answer requests whose method matches and whose request line contains ``needle``."""

    method: str
    needle: str
    status: int
    times: int
    retry_after: float | None = None
    hits: int = 0


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    request_line: str = ""
    streaming: bool = False  # response bytes forwarded since the last request
    at_boundary: bool = True  # the last forwarded bytes ended a chunk
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    def __init__(self, upstream_url: str, *, parse_http: bool | None = None) -> None:
        parts = urlsplit(upstream_url)
        self.scheme = parts.scheme or "http"
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or (443 if self.scheme == "https" else 80)
        self.parse_http = self.scheme == "http" if parse_http is None else parse_http
        self.port = 0
        self.url = ""
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str]] = []
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> str:
        await self.accept()
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        return self.url

    async def accept(self) -> None:
        """Listen (again, on the same port)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def refuse(self) -> None:
        """Stop listening and drop every open connection: the server looks down."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for conn in list(self._conns):
            self._drop(conn)

    async def stop(self) -> None:
        await self.refuse()

    # --- faults ---------------------------------------------------------------------------------
    def cut(self, needle: str | None = "watch=true") -> int:
        """Cut every response being streamed for a request containing ``needle`` mid-chunk; returns how many."""
        count = 0
        for conn in list(self._conns):
            if not conn.streaming or (needle and self.parse_http and needle not in conn.request_line):
                continue
            if conn.at_boundary:  # announce a chunk of 0x400 bytes and send only a few
                with contextlib.suppress(Exception):
                    conn.client.write(b'400\r\n{"type":"MODIFIED","object":{"metadata":')
            self._drop(conn)
            count += 1
        self.cuts += count
        return count

    def streams(self, needle: str = "watch=true") -> int:
        """Responses being streamed now for requests containing ``needle`` (plain HTTP)."""
        return sum(1 for c in self._conns if c.streaming and needle in c.request_line)

    def fail(self, method: str, needle: str, status: int, *, times: int = 1, retry_after: float | None = None) -> Rule:
        """Answer the next ``times`` matching requests with ``status`` (and ``Retry-After``)."""
        rule = Rule(method.upper(), needle, status, times, retry_after)
        self.rules.append(rule)
        return rule

    def count(self, method: str | None = None, needle: str = "") -> int:
        return sum(1 for m, p in self.requests if (method is None or m == method) and needle in p)

    # --- plumbing -------------------------------------------------------------------------------
    def _drop(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        for writer in (conn.client, conn.upstream):
            with contextlib.suppress(Exception):
                writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        conn = _Conn(writer, up_writer)
        self._conns.add(conn)
        upstream = asyncio.create_task(self._pump_down(conn, up_reader))
        try:
            if self.parse_http:
                await self._pump_requests(conn, reader)
            else:
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            upstream.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await upstream
            self._drop(conn)

    async def _pump_down(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                conn.streaming = True
                conn.at_boundary = data.endswith(b"\r\n")
                conn.client.write(data)
                await conn.client.drain()
        self._drop(conn)

    async def _pump_requests(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        """Forward one request at a time (clients do not pipeline), answering matching ones ourselves."""
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, _, rest = lines[0].partition(" ")
            path = rest.rpartition(" ")[0]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            rule = next((r for r in self.rules if r.hits < r.times and r.method == method and r.needle in path), None)
            if rule is not None:
                rule.hits += 1
                extra = f"Retry-After: {rule.retry_after:g}\r\n" if rule.retry_after is not None else ""
                payload = b'{"kind":"Status","apiVersion":"v1","status":"Failure","message":"injected fault"}'
                conn.client.write(
                    f"HTTP/1.1 {rule.status} Injected\r\nContent-Type: application/json\r\n{extra}"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await conn.client.drain()
                continue
            self.requests.append((method, path))
            conn.request_line = lines[0]
            conn.streaming = False
            conn.upstream.write(head + body)
            await conn.upstream.drain()
