"""Read a plain-HTTP response body straight from its socket, one system call per chunk.

With many connections in Python threads, the usual path (urllib3 -> http.client
-> a buffered reader -> ``recv`` of whatever the kernel has, often a few kB)
costs a ``poll`` plus a ``recv`` and two GIL hand-offs per small read; under a
per-connection rate limit the kernel holds little at a time, so a 2 GiB
download makes hundreds of thousands of them and the threads spend their time
fighting over the GIL (measured: 0.65 GB/s with 32 connections, twice that this
way). ``recv(n, MSG_WAITALL)`` on a blocking socket waits in the kernel until
``n`` bytes are there and returns them as one ``bytes`` object.

For local targets the bytes need not enter Python at all: :func:`splice_plain_body`
moves them socket -> pipe -> file with ``splice(2)`` (no copy into user space, no
allocation per chunk; about 20% less system time for a 2 GiB download), and the
engine hashes them back from the page cache, as it does for most bytes anyway.

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
import os
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from typing import Any

from modelferry.errors import RetryableError, StalledError
from modelferry.storage.base import FileSink, InPlace

# The buffered reader http.client reads headers through holds at most this much of
# the body (io.DEFAULT_BUFFER_SIZE, 8 KiB to 128 KiB by Python version); a first
# read1() larger than its buffer drains it and bypasses it, so the rest can come
# from the socket directly.
FIRST_READ = 1 << 20
_HAS_WAITALL = hasattr(socket, "MSG_WAITALL") and hasattr(socket, "SO_RCVTIMEO")
CAN_SPLICE = hasattr(os, "splice") and hasattr(os, "SPLICE_F_MOVE")
PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ; the kernel's default cap (fs.pipe-max-size) is 1 MiB
_F_SETPIPE_SZ = 1031
_pipes = threading.local()  # one pipe per worker thread, reused across parts
_NO_SPLICE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}  # the target file cannot take spliced writes


DirectBody = tuple[http.client.HTTPResponse, io.BufferedReader, socket.socket]


def direct_body(resp: Any, length: int) -> DirectBody | None:
    """The pieces of urllib3 response ``resp`` (plain or TLS socket) when its body can be read directly."""
    if length <= FIRST_READ:
        return None
    raw = getattr(resp, "_fp", None)
    if not isinstance(raw, http.client.HTTPResponse) or raw.chunked or raw.length != length:
        return None
    if (resp.headers.get("Content-Encoding") or "identity").lower() != "identity":
        return None
    reader = raw.fp
    sock = getattr(getattr(reader, "raw", None), "_sock", None)
    if not isinstance(reader, io.BufferedReader) or not isinstance(sock, socket.socket):
        return None
    return raw, reader, sock


def plain_body(resp: Any, length: int) -> DirectBody | None:
    """The pieces of urllib3 response ``resp`` when its ``length``-byte body can be read directly, else None."""
    if not _HAS_WAITALL:
        return None
    parts = direct_body(resp, length)
    if parts is None or type(parts[2]) is not socket.socket or isinstance(parts[2], ssl.SSLSocket):
        return None
    return parts


def _set_rcvtimeo(sock: socket.socket, seconds: float) -> None:
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", whole, int((seconds - whole) * 1e6)))


def stream_plain_body(
    parts: DirectBody,
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
    first = first_bytes(reader, length, what)
    yield first
    with _stall_guarded(sock, stall_timeout):
        yield from _recv_chunks(sock, length - len(first), length, chunk_size, what)
    finished(raw)


def first_bytes(reader: io.BufferedReader, length: int, what: str) -> bytes:
    """What http.client's reader already holds of the body (at most :data:`FIRST_READ`)."""
    first = reader.read1(min(FIRST_READ, length))
    if not first:
        raise RetryableError(f"{what}: connection closed before the body", obj=what)
    return first


@contextlib.contextmanager
def _stall_guarded(sock: socket.socket, stall_timeout: float) -> Iterator[None]:
    """Blocking reads (MSG_WAITALL and splice need them) bounded by SO_RCVTIMEO; restored afterwards."""
    previous = sock.gettimeout()
    sock.settimeout(None)
    _set_rcvtimeo(sock, stall_timeout)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            _set_rcvtimeo(sock, 0)
            sock.settimeout(previous)


def finished(raw: http.client.HTTPResponse) -> None:
    """The body is consumed: let http.client (and so urllib3's pool) see a finished response."""
    raw.length = 0
    raw._close_conn()  # type: ignore[attr-defined]  # what http.client itself calls at end of body


def _recv_chunks(sock: socket.socket, remaining: int, length: int, chunk_size: int, what: str) -> Iterator[bytes]:
    """The last ``remaining`` of ``length`` body bytes, one ``recv(MSG_WAITALL)`` per chunk."""
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
            raise RetryableError(f"{what}: connection closed after {length - remaining} of {length} bytes", obj=what)
        remaining -= len(data)
        yield data


def _thread_pipe() -> tuple[int, int]:
    pipe: tuple[int, int] | None = getattr(_pipes, "pipe", None)
    if pipe is None:
        pipe = os.pipe()
        with contextlib.suppress(OSError):  # a smaller pipe only means more system calls
            import fcntl

            fcntl.fcntl(pipe[1], _F_SETPIPE_SZ, PIPE_SIZE)
        _pipes.pipe = pipe
    return pipe


def _drop_thread_pipe() -> None:
    """After a failure the pipe may hold bytes of the failed range: never reuse it."""
    pipe: tuple[int, int] | None = getattr(_pipes, "pipe", None)
    _pipes.pipe = None
    if pipe is not None:
        for fd in pipe:
            with contextlib.suppress(OSError):
                os.close(fd)


def splice_plain_body(
    parts: DirectBody,
    length: int,
    sink: FileSink,
    chunk_size: int,
    stall_timeout: float,
    what: str,
) -> Iterator[bytes | InPlace]:
    """Like :func:`stream_plain_body`, but the bytes go socket -> pipe -> ``sink`` in the kernel.

    The bytes http.client already buffered come first as ``bytes`` (the caller writes them at
    ``sink.offset``); everything after is written by ``splice`` at the following offsets and
    reported as :class:`InPlace` counts. A write error on the file is translated by the sink;
    a file that takes no spliced writes at all (``O_APPEND``, some FUSE and network
    filesystems) gets the rest of the body as ``bytes``, for the caller to write.
    """
    raw, reader, sock = parts
    first = first_bytes(reader, length, what)
    yield first
    with _stall_guarded(sock, stall_timeout):
        yield from _splice_chunks(sock, sink, sink.offset + len(first), length - len(first), length, chunk_size, what)
    finished(raw)


def _splice_chunks(
    sock: socket.socket, sink: FileSink, offset: int, remaining: int, length: int, chunk_size: int, what: str
) -> Iterator[bytes | InPlace]:
    """The last ``remaining`` body bytes into ``sink`` at ``offset`` on, through this thread's pipe."""
    read_end, write_end = _thread_pipe()
    ok = False
    try:
        while remaining:
            try:
                got = os.splice(sock.fileno(), write_end, min(chunk_size, remaining), flags=os.SPLICE_F_MOVE)
            except BlockingIOError as exc:
                raise StalledError(f"{what}: no bytes for longer than the stall timeout", obj=what) from exc
            except OSError as exc:
                raise RetryableError(f"{what}: transfer interrupted: {exc}", obj=what) from exc
            if not got:
                raise RetryableError(
                    f"{what}: connection closed after {length - remaining} of {length} bytes", obj=what
                )
            moved = _pipe_to_file(read_end, sink, offset, got)
            if moved:
                yield InPlace(moved)
            offset += got
            remaining -= got
            if moved < got:  # the filesystem takes no spliced writes: the rest comes as bytes
                yield _read_pipe(read_end, got - moved)
                yield from _recv_chunks(sock, remaining, length, chunk_size, what)
                remaining = 0
        ok = True
    finally:
        if not ok:
            _drop_thread_pipe()


def _pipe_to_file(read_end: int, sink: FileSink, offset: int, count: int) -> int:
    """Move ``count`` bytes from the pipe into the sink at ``offset``; fewer when the file refuses splice."""
    moved = 0
    while moved < count:
        try:
            moved += os.splice(read_end, sink.fd, count - moved, offset_dst=offset + moved, flags=os.SPLICE_F_MOVE)
        except OSError as exc:
            if exc.errno in _NO_SPLICE:  # O_APPEND, some FUSE and network filesystems
                return moved
            raise sink.translate(exc) from exc
    return moved


def _read_pipe(read_end: int, count: int) -> bytes:
    """What is left in the pipe, as bytes (the fallback when a file takes no spliced writes)."""
    parts = []
    while count:
        data = os.read(read_end, count)
        if not data:
            raise RetryableError("the splice pipe ended early")
        parts.append(data)
        count -= len(data)
    return b"".join(parts)
