"""One thread decrypts the HTTPS bodies of every reader: TLS records without GIL hand-offs.

``SSL_read`` returns one TLS record (at most 16 KiB) per call, and Python releases the GIL around
each call. With one reading thread per connection (64 by default) every record became a GIL
hand-off between threads that all had work: measured on 2 GiB over HTTPS from loopback nginx on 2
cores, about seven ``futex`` calls per record and 4.1 CPU seconds per GB in the client, against 1.7
over plain HTTP. Here the readers hand their sockets to a pump: one thread that waits on all of
them with ``epoll`` and, whenever one is readable, decrypts every record already there straight
into that reader's chunk (non-blocking ``recv_into``). A reader sleeps on an event until its chunk
is full, and nothing else wants the GIL while the pump releases it for a record, so the release
costs no system call. The reader then hashes and writes the chunk as before.

For a local target (:meth:`TlsPump.fill_into`) the pump also writes the records into the part's
file, from a scratch buffer it reuses, as ``splice`` does for plain HTTP: no chunk is allocated,
copied or handed over, and the reader hashes the bytes back from the page cache. Measured on the
same 2 GiB: 6.0-6.9 s and 8.1-9.4 client CPU seconds before the pump, 4.0-5.1 s and 4.9-5.4 after.

Time limits are the pump's: a chunk is handed on with what has arrived once ``arrived_wait``
seconds passed (so the low-speed check sees a trickle), and a socket that gets no byte for the
stall timeout fails with :class:`StalledError`. A socket shut down under a reader (cancellation)
reads as end of stream at once.

Errors are the reader's: the pump records them on the reader's request and the reader raises them.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from modelferry.cpus import usable_cpus
from modelferry.errors import RetryableError, StalledError
from modelferry.storage.base import FileSink

RECORD = 1 << 14  # the largest TLS record payload: what one SSL_read can return
TICK = 0.02  # seconds between looks at the time limits (stall, arrived wait) while requests wait
CANCEL_WAIT = 10.0  # seconds an interrupted reader waits for the pump to let go of its socket
SCRATCH = 1 << 20  # bytes decrypted before they are written into a file (fill_into)


@dataclass(eq=False)
class _Fill:
    """One reader's request: up to ``want`` bytes of ``sock`` into a new chunk, or into ``sink`` at ``offset``."""

    sock: socket.socket  # an ssl.SSLSocket, non-blocking
    want: int
    stall: float | None  # seconds without a byte before the read fails; None: no limit
    arrived_wait: float  # hand on a partial chunk once this many seconds passed
    done_before: int  # body bytes read before this chunk (for the messages)
    length: int  # the whole body's length (for the messages)
    what: str
    sink: FileSink | None = None  # write the bytes here (the pump's scratch buffer on the way) instead
    offset: int = 0  # where in the sink this request's first byte goes
    buf: bytearray = field(init=False)
    view: memoryview = field(init=False)
    got: int = 0
    started: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)
    events: int = selectors.EVENT_READ
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.buf = bytearray(self.want if self.sink is None else 0)
        self.view = memoryview(self.buf)


class TlsPump:
    """The pump thread and the requests it serves; started on first use, a daemon."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inbox: deque[_Fill] = deque()
        self._cancels: deque[_Fill] = deque()  # requests whose reader stopped waiting
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._active: set[_Fill] = set()
        self._scratch = memoryview(bytearray(SCRATCH))  # records on their way into a file (fill_into)
        self._next_check = 0.0
        self._thread = threading.Thread(target=self._run, name="modelferry-tls-pump", daemon=True)
        self._thread.start()

    def fill(
        self,
        sock: socket.socket,
        want: int,
        *,
        stall: float | None,
        arrived_wait: float,
        done_before: int,
        length: int,
        what: str,
    ) -> bytes:
        """Up to ``want`` bytes of non-blocking ``sock``: all at speed, what arrived once ``arrived_wait`` passed."""
        job = self._serve(_Fill(sock, want, stall, arrived_wait, done_before, length, what))
        return bytes(job.buf) if job.got == job.want else bytes(job.buf[: job.got])

    def fill_into(
        self,
        sock: socket.socket,
        want: int,
        sink: FileSink,
        offset: int,
        *,
        stall: float | None,
        arrived_wait: float,
        done_before: int,
        length: int,
        what: str,
    ) -> int:
        """Like :meth:`fill`, but the bytes are written into ``sink`` at ``offset`` by the pump; how many.

        No chunk is allocated, copied or handed between threads: the records are decrypted into the
        pump's scratch buffer and written to the file from there. A write error is the sink's
        (``sink.translate``: a full disk is the target's error, not a transfer error).
        """
        job = self._serve(_Fill(sock, want, stall, arrived_wait, done_before, length, what, sink, offset))
        return job.got

    def _serve(self, job: _Fill) -> _Fill:
        """Queue ``job``, wait until the pump finished it, raise its error."""
        with self._lock:
            self._inbox.append(job)
        self._wake()
        try:
            job.finished.wait()
        except BaseException:  # interrupted while waiting (KeyboardInterrupt in the main thread)
            with self._lock:
                self._cancels.append(job)
            self._wake()
            job.finished.wait(CANCEL_WAIT)  # the pump lets go of the socket before the caller closes it
            raise
        job.view.release()
        if job.error is not None:
            error, job.error = job.error, None  # the traceback holds this frame and so the buffer
            raise error
        return job

    def idle(self) -> bool:
        """True when the pump holds no request (every socket let go)."""
        with self._lock:
            return not self._inbox and not self._cancels and not self._active

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # the pump has a wake-up pending already
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        while True:
            try:
                self._turn()
            except Exception as exc:  # a defect here must not leave readers waiting forever
                for job in list(self._active):
                    job.error = RetryableError(f"{job.what}: TLS reader failed: {exc!r}", obj=job.what)
                    self._finish(job)
                time.sleep(TICK)  # and must not spin if it repeats

    def _turn(self) -> None:
        """Wait for a readable socket, a new request or the next look at the time limits; serve what is due."""
        now = time.monotonic()
        timeout = max(0.0, self._next_check - now) if self._active else None
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                self._take_inbox()
            elif key.data in self._active:
                self._advance(key.data)
        now = time.monotonic()
        if now >= self._next_check:  # limits are looked at every TICK, not after every record
            self._expire(now)
            self._next_check = now + TICK

    def _take_inbox(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        with self._lock:
            jobs = list(self._inbox)
            self._inbox.clear()
            cancels = list(self._cancels)
            self._cancels.clear()
        for job in jobs:
            try:
                self._selector.register(job.sock, job.events, job)
            except (OSError, ValueError, KeyError) as exc:  # closed under the reader (cancellation)
                job.error = RetryableError(f"{job.what}: transfer interrupted: {exc}", obj=job.what)
                job.finished.set()
                continue
            self._active.add(job)
            self._advance(job)  # records may be waiting in the kernel or in OpenSSL already
        for job in cancels:
            if job in self._active:
                job.error = RetryableError(f"{job.what}: read cancelled", obj=job.what)
                self._finish(job)

    def _advance(self, job: _Fill) -> None:
        """Decrypt every record that is there; finish the request when its chunk is full or it failed."""
        try:
            while job.got < job.want:
                if job.sink is None:
                    n, wait = self._decrypt(job, job.view[job.got : job.want])
                else:
                    n, wait = self._decrypt(job, self._scratch[: min(SCRATCH, job.want - job.got)])
                    self._write(job, n)
                if n:
                    job.got += n
                    job.last = time.monotonic()
                if wait:
                    self._listen(job, wait)
                    return
        except OSError as exc:  # ssl.SSLError (a bad record MAC, an alert) included: the stream is broken
            job.error = RetryableError(f"{job.what}: transfer interrupted: {exc}", obj=job.what)
        except Exception as exc:  # never let one request stop the pump; the reader sees it (a full disk too)
            job.error = exc
        self._finish(job)

    @staticmethod
    def _decrypt(job: _Fill, view: memoryview) -> tuple[int, int]:
        """Records into ``view`` until it is full or no whole record is there: (bytes, the events to wait for or 0)."""
        n = 0
        while n < len(view):
            try:
                got = job.sock.recv_into(view[n : n + RECORD])
            except ssl.SSLWantReadError:
                return n, selectors.EVENT_READ
            except ssl.SSLWantWriteError:  # a TLS 1.3 key update wants an answer first
                return n, selectors.EVENT_READ | selectors.EVENT_WRITE
            if not got:
                raise RetryableError(
                    f"{job.what}: connection closed after {job.done_before + job.got + n} of {job.length} bytes",
                    obj=job.what,
                )
            n += got
        return n, 0

    def _write(self, job: _Fill, n: int) -> None:
        """The first ``n`` scratch bytes into the job's sink, after what it already wrote."""
        assert job.sink is not None
        data = self._scratch[:n]
        at = job.offset + job.got
        done = 0
        try:
            while done < n:
                done += os.pwrite(job.sink.fd, data[done:], at + done)
        except OSError as exc:
            raise job.sink.translate(exc) from exc

    def _listen(self, job: _Fill, events: int) -> None:
        if job.events != events:
            job.events = events
            self._selector.modify(job.sock, events, job)

    def _expire(self, now: float) -> None:
        for job in list(self._active):
            if job.got and now >= job.started + job.arrived_wait:
                self._finish(job)  # a trickle: hand on what arrived
            elif job.stall is not None and now >= job.last + job.stall:
                job.error = StalledError(f"{job.what}: no bytes for longer than the stall timeout", obj=job.what)
                self._finish(job)

    def _finish(self, job: _Fill) -> None:
        self._active.discard(job)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(job.sock)
        job.finished.set()


CPUS_PER_PUMP = 4  # one pump per this many usable CPUs (at least one, at most MAX_PUMPS)
MAX_PUMPS = 8

_pumps: list[TlsPump] = []
_pumps_lock = threading.Lock()


def pump_count(cpus: int) -> int:
    """How many pumps serve a process that may run on ``cpus`` CPUs.

    One pump decrypts at well over 1 GB/s where it has a core to itself; on two cores more pumps
    measured no faster (they take the GIL from each other), so they only start where cores abound.
    """
    return max(1, min(MAX_PUMPS, cpus // CPUS_PER_PUMP))


def _forget_pumps() -> None:
    """In a forked child: no pump thread exists there, and the lock may have been held at the fork."""
    global _pumps, _pumps_lock
    _pumps, _pumps_lock = [], threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pumps)


def pump(sock: socket.socket) -> TlsPump:
    """The pump of this process that serves ``sock``; the pumps start on first use."""
    global _pumps
    with _pumps_lock:
        if not _pumps:
            _pumps = [TlsPump() for _ in range(pump_count(usable_cpus()))]
        return _pumps[sock.fileno() % len(_pumps)]
