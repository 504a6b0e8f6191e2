"""Our own ranged HTTP GET engine, shared by backends that serve bytes over plain HTTP(S).

One thread-safe urllib3 pool serves every worker thread of the engine. Each
ranged GET is streamed in large chunks (no per-byte Python work), redirects are
followed by hand so that credentials never travel to another host (Hub files
live on a CDN), and every failure is translated into the modelferry hierarchy:

- connect timeout / reset / truncated body -> :class:`RetryableError`
- no byte within the stall timeout -> :class:`StalledError`
- 429 / 503 -> :class:`ThrottledError` carrying ``Retry-After``
- 404 -> :class:`NotFoundError`, 401 / 403 -> :class:`AccessDeniedError`

A server that ignores ``Range`` and answers 200 with the whole body cannot
corrupt data: the bytes before the range are skipped and only ``length`` bytes
are handed on.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import cast
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from modelferry.errors import (
    PermanentError,
    RetryableError,
    StalledError,
)
from modelferry.speed import LowSpeedGuard
from modelferry.storage.base import FileSink, InPlace
from modelferry.storage.http_status import parse_content_range, same_origin, status_error
from modelferry.storage.socket_body import CAN_SPLICE, plain_body, splice_plain_body, stream_plain_body
from modelferry.storage.tls_body import (
    ARRIVED_WAIT,
    stream_tls_body,
    stream_tls_body_into,
    tls_body,
    writes_at_offsets,
)
from modelferry.tls import TLSConfig, is_tls_failure

log = logging.getLogger(__name__)

CHUNK = 1 << 19
SPLICE_CHUNK = 1 << 20  # at most one pipe's worth per splice call
PUMP_INTO_CHUNK = 4 << 20  # HTTPS bytes the TLS pump writes into a file per hand-off to the reader
MAX_REDIRECTS = 5


class RangedHTTPClient:
    """Pooled, thread-safe ranged GETs with manual redirects and stall detection."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        stall_timeout: float,
        pool_size: int = 16,
        user_agent: str = "modelferry",
        chunk_size: int = CHUNK,
        tls: TLSConfig | None = None,
        speed: tuple[int, float] = (0, 60.0),
    ) -> None:
        self.chunk_size = chunk_size
        self.tls = tls or TLSConfig()
        self.speed = speed  # the low-speed limit (bytes/s, seconds) while skipping what a 200 sends unasked
        self.stall_timeout = stall_timeout
        self.user_agent = user_agent
        self._pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=max(1, pool_size),
            block=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=stall_timeout),
            retries=False,
            cert_reqs="CERT_REQUIRED" if self.tls.verify else "CERT_NONE",
            ssl_context=self.tls.bulk_context(),  # the CA loaded once, not per connection
        )
        # Sockets of responses being read right now, so interrupt() can wake their readers.
        self._inflight: set[socket.socket] = set()
        self._inflight_lock = threading.Lock()
        self._interrupted = False
        self._in_place: Counter[str] = Counter()  # bytes a body path wrote into files itself, by path

    @property
    def spliced_bytes(self) -> int:
        """Bytes moved socket -> file by splice (statistics, tests)."""
        return self._in_place["splice"]

    @property
    def pumped_bytes(self) -> int:
        """HTTPS bytes the TLS pump wrote into files itself (statistics, tests)."""
        return self._in_place["pump"]

    def _counted(self, path: str, chunks: Iterator[bytes | InPlace]) -> Iterator[bytes | InPlace]:
        """``chunks`` as they come, the :class:`InPlace` ones counted under ``path``."""
        for chunk in chunks:
            if isinstance(chunk, InPlace):
                with self._inflight_lock:
                    self._in_place[path] += chunk
            yield chunk

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.clear()

    def interrupt(self) -> None:
        """Make every blocked body read return at once (cancellation); later reads fail immediately.

        The sockets are shut down, not closed: the descriptor stays owned by the thread reading
        it (which then sees end-of-stream, fails the part and closes the connection itself), so
        no thread can ever read or write a descriptor number the kernel has handed out again.
        """
        with self._inflight_lock:
            self._interrupted = True
            victims = list(self._inflight)
        for sock in victims:
            _shutdown(sock)
        if victims:
            log.info("interrupted %d in-flight download(s)", len(victims))

    def _track(self, resp: urllib3.BaseHTTPResponse) -> socket.socket | None:
        conn = getattr(resp, "connection", None)
        sock = getattr(conn, "sock", None)
        if not isinstance(sock, socket.socket):
            return None
        with self._inflight_lock:
            self._inflight.add(sock)
            interrupted = self._interrupted
        if interrupted:
            _shutdown(sock)
        return sock

    def _untrack(self, sock: socket.socket | None) -> None:
        if sock is not None:
            with self._inflight_lock:
                self._inflight.discard(sock)

    def put(
        self, url: str, body: bytes | bytearray | memoryview, headers: Mapping[str, str], what: str
    ) -> urllib3.BaseHTTPResponse:
        """PUT ``body`` to ``url`` (no redirects); the whole (small) answer, whatever its status.

        Transport failures are translated as for GETs: a certificate problem is the TLS failure,
        anything else on the way (reset, timeout, refused) is retryable.
        """
        try:
            return self._pool.request(
                "PUT",
                url,
                body=cast(bytes, body),  # any bytes-like object goes out as it is (urllib3 takes its buffer)
                headers={"User-Agent": self.user_agent, **headers},
                redirect=False,
                preload_content=True,
                decode_content=False,
            )
        except Urllib3HTTPError as exc:
            raise self._transport_error(exc, url, what) from exc

    def _transport_error(self, exc: Urllib3HTTPError, url: str, what: str) -> Exception:
        """A request that got no answer: stalled, a TLS failure (permanent), or a retryable connection failure."""
        if isinstance(exc, ReadTimeoutError):
            return StalledError(f"{what}: no response within the stall timeout", obj=what)
        if is_tls_failure(exc):
            return self.tls.failure(urlsplit(url).netloc, exc, what=what)
        return RetryableError(f"{what}: connection failed: {exc}", obj=what)

    def _open(self, url: str, headers: dict[str, str], what: str) -> tuple[urllib3.BaseHTTPResponse, str]:
        """GET ``url`` following redirects; the Authorization header stays with its origin."""
        origin = url
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            send = headers
            if current is not origin and "Authorization" in headers and not same_origin(origin, current):
                send = {k: v for k, v in headers.items() if k != "Authorization"}
            try:
                resp = self._pool.request(
                    "GET", current, headers=send, preload_content=False, decode_content=False, redirect=False
                )
            except Urllib3HTTPError as exc:
                raise self._transport_error(exc, current, what) from exc
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location")
                resp.drain_conn()
                resp.release_conn()
                if not location:
                    raise RetryableError(f"{what}: redirect {resp.status} without a Location", obj=what)
                current = urljoin(current, location)
                continue
            return resp, current
        raise PermanentError(f"{what}: more than {MAX_REDIRECTS} redirects", obj=what)

    def get_range(
        self,
        url: str,
        start: int,
        length: int,
        *,
        headers: Mapping[str, str] | None = None,
        what: str | None = None,
    ) -> Iterator[bytes]:
        """Stream bytes ``[start, start + length)`` of ``url`` in chunks of up to ``chunk_size``."""
        return cast(Iterator[bytes], self._get_range(url, start, length, headers=headers, what=what, sink=None))

    def get_range_into(
        self,
        url: str,
        start: int,
        length: int,
        sink: FileSink,
        *,
        headers: Mapping[str, str] | None = None,
        what: str | None = None,
    ) -> Iterator[bytes | InPlace]:
        """Like :meth:`get_range`, but a plain-HTTP body is spliced into ``sink`` (see :func:`splice_plain_body`)."""
        return self._get_range(url, start, length, headers=headers, what=what, sink=sink)

    def _get_range(
        self,
        url: str,
        start: int,
        length: int,
        *,
        headers: Mapping[str, str] | None,
        what: str | None,
        sink: FileSink | None,
    ) -> Iterator[bytes | InPlace]:
        what = what or url
        if length <= 0:
            return
        send = {
            "User-Agent": self.user_agent,
            "Accept-Encoding": "identity",  # ranges address stored bytes, never a re-encoding
            **(headers or {}),
            "Range": f"bytes={start}-{start + length - 1}",
        }
        resp, _ = self._open(url, send, what)
        sock = self._track(resp)
        ok = False
        try:
            skip = self._check_response(resp, start, length, what)
            yield from self._stream(resp, skip, length, what, sink)
            ok = True
        finally:
            self._untrack(sock)  # before the connection goes back to the pool or is closed
            if ok and resp.status == 206 and not self._interrupted:
                resp.release_conn()
            else:
                # A half-read connection (an error, or a 200 whose tail we did not want) cannot be reused.
                resp.close()

    def _check_response(self, resp: urllib3.BaseHTTPResponse, start: int, length: int, what: str) -> int:
        """Validate the status and Content-Range; returns how many leading bytes to skip."""
        if resp.status == 206:
            got = parse_content_range(resp.headers.get("Content-Range"))
            if got is None or got[0] != start or got[1] != start + length - 1:
                raise RetryableError(
                    f"{what}: asked for bytes {start}-{start + length - 1}, "
                    f"server sent Content-Range {resp.headers.get('Content-Range')!r}",
                    obj=what,
                )
            return 0
        if resp.status == 200:
            if start:
                log.warning("%s: server ignored the Range header; skipping %d leading bytes", what, start)
            return start
        raise status_error(resp.status, what, resp.headers)

    def _stream(
        self, resp: urllib3.BaseHTTPResponse, skip: int, length: int, what: str, sink: FileSink | None = None
    ) -> Iterator[bytes | InPlace]:
        remaining_skip = skip
        remaining = length
        try:
            direct = None if skip else plain_body(resp, length)
            if direct is not None and sink is not None and CAN_SPLICE:  # plain HTTP into a local file
                yield from self._counted(
                    "splice", splice_plain_body(direct, length, sink, SPLICE_CHUNK, self.stall_timeout, what)
                )
                return
            if direct is not None:  # plain HTTP: one recv per chunk (see socket_body)
                yield from stream_plain_body(direct, length, self.chunk_size, self.stall_timeout, what)
                return
            tls = None if skip else tls_body(resp, length)
            if tls is not None and sink is not None and writes_at_offsets(sink.fd):  # the TLS pump writes it
                yield from self._counted("pump", stream_tls_body_into(tls, length, sink, PUMP_INTO_CHUNK, what))
                return
            if tls is not None:  # HTTPS: records decrypted straight into the chunk (see tls_body)
                yield from stream_tls_body(tls, length, self.chunk_size, what)
                return
            # Skipped bytes never reach the engine's run-wide check, so the skip has its own.
            guard = LowSpeedGuard(*self.speed)
            started = guard.clock()
            while remaining_skip:
                data = read_arrived(resp.read1, min(self.chunk_size, remaining_skip))
                if not data:
                    raise RetryableError(f"{what}: body ended before the requested range", obj=what)
                remaining_skip -= len(data)
                guard.add(len(data))
                guard.check(started, what)
            while remaining:
                data = read_arrived(resp.read1, min(self.chunk_size, remaining))
                if not data:
                    raise RetryableError(
                        f"{what}: connection closed after {length - remaining} of {length} bytes", obj=what
                    )
                remaining -= len(data)
                yield data
        except ReadTimeoutError as exc:
            raise StalledError(f"{what}: no bytes for longer than the stall timeout", obj=what) from exc
        except (ProtocolError, Urllib3HTTPError, OSError) as exc:
            raise RetryableError(f"{what}: transfer interrupted: {exc}", obj=what) from exc


def read_arrived(read1: Callable[[int], bytes], want: int, max_wait: float = ARRIVED_WAIT) -> bytes:
    """Up to ``want`` bytes: whole chunks at speed, but what has arrived once ``max_wait`` seconds passed.

    A plain ``read(want)`` waits for all ``want`` bytes, so a server trickling a byte a second would
    keep the chunk (and the low-speed check of :mod:`modelferry.transfer.speed`) away for days. Empty
    only at the end of the body.
    """
    parts: list[bytes] = []
    got = 0
    started = time.monotonic()
    while got < want:
        data = read1(want - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
        if time.monotonic() - started >= max_wait:
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _shutdown(sock: socket.socket) -> None:
    # socket.socket.shutdown even for TLS sockets: SSLSocket.shutdown would drop the SSL object
    # under the reading thread; a TCP shutdown just makes its next read see end-of-stream.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
