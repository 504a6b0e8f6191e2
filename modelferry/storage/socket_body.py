"""Read a plain-HTTP response body straight from its socket, one system call per chunk.

With many connections in Python threads, the usual path (urllib3 -> http.client
-> a buffered reader -> ``recv`` of whatever the kernel has, often a few kB)
costs a ``poll`` plus a ``recv`` and two GIL hand-offs per small read; under a
per-connection rate limit the kernel holds little at a time, so a 2 GiB
download makes hundreds of thousands of them and the threads spend their time
fighting over the GIL (measured: 0.65 GB/s with 32 connections, twice that this
way). ``recv(n, MSG_WAITALL)`` on a blocking socket waits in the kernel until
``n`` bytes are there and returns them as one ``bytes`` object.

Only used where it is safe: a plain TCP socket (TLS sockets take no flags), a
body with a known ``Content-Length`` (no chunked or encoded body), and the
standard library's ``http.client`` objects as urllib3 2 builds them. Anything
else returns None and the caller keeps the ordinary path. Stall detection is
kept with ``SO_RCVTIMEO``: a read that gets no byte within the stall timeout
fails (a slow but moving stream returns what it has and goes on).
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import io
import socket
import ssl
import struct
from collections.abc import Iterator
from typing import Any

from modelferry.errors import RetryableError, StalledError

# The buffered reader http.client reads headers through holds at most this much of
# the body (io.DEFAULT_BUFFER_SIZE, 8 KiB to 128 KiB by Python version); a first
# read1() larger than its buffer drains it and bypasses it, so the rest can come
# from the socket directly.
FIRST_READ = 1 << 20
_HAS_WAITALL = hasattr(socket, "MSG_WAITALL") and hasattr(socket, "SO_RCVTIMEO")


def plain_body(resp: Any, length: int) -> tuple[http.client.HTTPResponse, io.BufferedReader, socket.socket] | None:
    """The pieces of urllib3 response ``resp`` when its ``length``-byte body can be read directly, else None."""
    if not _HAS_WAITALL or length <= FIRST_READ:
        return None
    raw = getattr(resp, "_fp", None)
    if not isinstance(raw, http.client.HTTPResponse) or raw.chunked or raw.length != length:
        return None
    if (resp.headers.get("Content-Encoding") or "identity").lower() != "identity":
        return None
    reader = raw.fp
    sock = getattr(getattr(reader, "raw", None), "_sock", None)
    if not isinstance(reader, io.BufferedReader) or type(sock) is not socket.socket or isinstance(sock, ssl.SSLSocket):
        return None
    return raw, reader, sock


def _set_rcvtimeo(sock: socket.socket, seconds: float) -> None:
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", whole, int((seconds - whole) * 1e6)))


def stream_plain_body(
    parts: tuple[http.client.HTTPResponse, io.BufferedReader, socket.socket],
    length: int,
    chunk_size: int,
    stall_timeout: float,
    what: str,
) -> Iterator[bytes]:
    """Yield the ``length`` body bytes in chunks of ``chunk_size`` (the last may be shorter).

    On success http.client's response is marked complete so urllib3 can reuse the
    connection; on failure the caller must close it.
    """
    raw, reader, sock = parts
    remaining = length
    first = reader.read1(min(FIRST_READ, remaining))
    if not first:
        raise RetryableError(f"{what}: connection closed before the body", obj=what)
    remaining -= len(first)
    yield first
    previous = sock.gettimeout()
    sock.settimeout(None)  # blocking: MSG_WAITALL is ignored on a non-blocking socket
    _set_rcvtimeo(sock, stall_timeout)
    try:
        while remaining:
            try:
                data = sock.recv(min(chunk_size, remaining), socket.MSG_WAITALL)
            except BlockingIOError as exc:  # SO_RCVTIMEO expired with no byte at all
                raise StalledError(f"{what}: no bytes for longer than the stall timeout", obj=what) from exc
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    raise StalledError(f"{what}: no bytes for longer than the stall timeout", obj=what) from exc
                raise RetryableError(f"{what}: transfer interrupted: {exc}", obj=what) from exc
            if not data:
                raise RetryableError(
                    f"{what}: connection closed after {length - remaining} of {length} bytes", obj=what
                )
            remaining -= len(data)
            yield data
    finally:
        with contextlib.suppress(OSError):
            _set_rcvtimeo(sock, 0)
            sock.settimeout(previous)
    # The body is consumed: let http.client (and so urllib3's pool) see a finished response.
    raw.length = 0
    raw._close_conn()  # type: ignore[attr-defined]  # what http.client itself calls at end of body
