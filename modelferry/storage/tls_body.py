"""Read an HTTPS response body straight from its TLS socket, one TLS record per call, no layers between.

Profiled (py-spy, perf; 2 GiB over HTTPS from loopback nginx, 64 connections): after the ciphers
themselves (AES-GCM about 0.25 s and sha256 about 0.55 s of CPU per GB), the time went to the
Python layers every TLS record crossed on its way up: urllib3's ``read1`` and its error handling,
http.client, a ``BufferedReader`` and ``SocketIO``, each record (at most 16 KiB: ``SSL_read``
returns one record at a time) then joined again into a chunk. Here each record is decrypted by
``SSLSocket.recv_into`` straight into its place in the chunk (a ``memoryview`` slice of one
buffer per chunk, no per-record allocation), and the chunk is handed on as ``bytes``: one copy per
chunk, none per record. Hashing and writing then run on whole chunks, and hashlib releases the GIL
for them, so another thread decrypts meanwhile. The records are decrypted by the process's TLS pump
(:mod:`modelferry.storage.tls_pump`), not by the reading thread: one thread for every connection,
so a record costs no GIL hand-off between threads.

Kernel TLS: the contexts of the ranged reader ask OpenSSL for it (``SSL_OP_ENABLE_KTLS``; Python
3.11 has no name for the bit). OpenSSL turns it on per connection only where the kernel offers the
``tls`` ULP and the cipher and protocol version are supported for receiving; everywhere else, as on
a kernel built without ``CONFIG_TLS``, it falls back to user space by itself. Either way
``SSL_read`` (``recv_into``) returns plaintext, so this path is the same for both; with kernel TLS
the kernel decrypts while copying to the buffer. :func:`ktls_receive` says which one a socket got.

Stall detection and a trickling server: urllib3's read timeout on the socket is the stall timeout
the pump applies, so a body that gets no byte within it fails with :class:`StalledError`, and a
chunk is handed on with what has arrived once :data:`ARRIVED_WAIT` seconds passed (the low-speed
check sees a trickle).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import ssl
from collections.abc import Iterator
from typing import Any, cast

from modelferry.storage.base import FileSink, InPlace
from modelferry.storage.socket_body import DirectBody, direct_body, finished, first_bytes
from modelferry.storage.tls_pump import pump

ARRIVED_WAIT = 1.0  # a body read hands on what has arrived after this long (a trickling server; HTTP too)
_TCP_ULP = getattr(socket, "TCP_ULP", 31)
_ULP_LIST = "/proc/sys/net/ipv4/tcp_available_ulp"


def tls_body(resp: Any, length: int) -> DirectBody | None:
    """The pieces of urllib3 response ``resp`` when its ``length``-byte body can be read from its TLS socket."""
    parts = direct_body(resp, length)
    if parts is None or type(parts[2]) is not ssl.SSLSocket:  # not urllib3's SSLTransport (TLS in TLS)
        return None
    return parts


def stream_tls_body(parts: DirectBody, length: int, chunk_size: int, what: str) -> Iterator[bytes]:
    """Yield the ``length`` body bytes in chunks of up to ``chunk_size``, each filled by the TLS pump.

    On success http.client's response is marked complete so urllib3 can reuse the connection; on
    failure the caller must close it.
    """
    return cast(Iterator[bytes], _pumped(parts, length, chunk_size, what, None))


def ktls_offered() -> bool:
    """True when the kernel offers the ``tls`` upper-layer protocol (``CONFIG_TLS``, module loaded)."""
    try:
        with open(_ULP_LIST) as fh:
            return "tls" in fh.read().split()
    except OSError:
        return False


def writes_at_offsets(fd: int) -> bool:
    """True when ``pwrite`` on ``fd`` lands where it is told (not an ``O_APPEND`` file, where Linux appends)."""
    try:
        return not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND
    except OSError:
        return False


def stream_tls_body_into(
    parts: DirectBody, length: int, sink: FileSink, chunk_size: int, what: str
) -> Iterator[bytes | InPlace]:
    """Like :func:`stream_tls_body`, but the pump writes the body into ``sink`` itself (as ``splice`` does for plain HTTP).

    The bytes http.client already buffered come first as ``bytes`` (the caller writes them at
    ``sink.offset``); the rest is decrypted and written at the following offsets by the pump and
    reported as :class:`InPlace` counts, for the caller to hash back from the page cache.
    """
    return _pumped(parts, length, chunk_size, what, sink)


def _pumped(
    parts: DirectBody, length: int, chunk_size: int, what: str, sink: FileSink | None
) -> Iterator[bytes | InPlace]:
    raw, reader, sock = parts
    first = first_bytes(reader, length, what)
    yield first
    remaining = length - len(first)
    stall = sock.gettimeout()  # urllib3's read timeout: the stall timeout
    sock.setblocking(False)  # the pump waits for it with epoll
    serving = pump(sock)
    try:
        while remaining:
            want, done = min(chunk_size, remaining), length - remaining
            limits: dict[str, Any] = {"stall": stall, "arrived_wait": ARRIVED_WAIT, "done_before": done}
            if sink is None:
                chunk = serving.fill(sock, want, length=length, what=what, **limits)
                remaining -= len(chunk)
                yield chunk
            else:
                n = serving.fill_into(sock, want, sink, sink.offset + done, length=length, what=what, **limits)
                remaining -= n
                yield InPlace(n)
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(stall)
    finished(raw)


def ktls_receive(sock: socket.socket) -> bool:
    """True when ``sock`` runs kernel TLS (its TCP upper-layer protocol is ``tls``)."""
    try:
        ulp = sock.getsockopt(socket.IPPROTO_TCP, _TCP_ULP, 16)
    except OSError:
        return False
    return ulp.rstrip(b"\0") == b"tls"
