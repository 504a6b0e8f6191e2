"""The part writer of object stores: one part buffered in memory, uploaded when it is complete.

Object stores take a part in one request, so the engine's streamed writes are
collected first; a part that ends short is a retryable failure (the engine
fetches it again) rather than a truncated upload. The buffer is allocated at the
part's size once (no growing and copying while bytes arrive) and, for large parts,
comes from :class:`PartBuffers` and goes back there once its request is over, so a
long upload does not map and fault in fresh memory for every part.
"""

from __future__ import annotations

import threading
from typing import Protocol

from modelferry.errors import RetryableError
from modelferry.settings import MiB
from modelferry.storage.base import PartWriter

POOLED_FROM = 1 * MiB  # smaller buffers are cheap to allocate: not kept


class PartBuffers:
    """Free part buffers for reuse, at most ``keep`` bytes of them (thread-safe)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._free: list[bytearray] = []
        self._held = 0
        self._lock = threading.Lock()
        self.reused = 0  # statistics, tests

    @property
    def held(self) -> int:
        """Bytes of free buffers kept."""
        return self._held

    def take(self, size: int) -> bytearray:
        """A buffer of exactly ``size`` bytes (its contents are overwritten by the caller)."""
        if size >= POOLED_FROM:
            with self._lock:
                for i, buf in enumerate(self._free):
                    if len(buf) == size:
                        del self._free[i]
                        self._held -= size
                        self.reused += 1
                        return buf
        return bytearray(size)

    def give(self, buf: bytearray | bytes) -> None:
        """Hand back a buffer nobody uses any more (kept while under ``keep``)."""
        if not isinstance(buf, bytearray) or len(buf) < POOLED_FROM:
            return
        with self._lock:
            while self._free and self._held + len(buf) > self.keep:
                self._held -= len(self._free.pop(0))  # the oldest (often another size) goes first
            if len(buf) <= self.keep:
                self._free.append(buf)
                self._held += len(buf)


BUFFERS = PartBuffers(keep=128 * MiB)  # shared by every upload of the process (two default parts)


class BufferedUpload(Protocol):
    """What :class:`BufferedPart` needs from its upload."""

    path: str
    describe: str

    def commit_part(self, index: int, data: bytearray) -> None:
        """Upload part ``index`` (multipart) or keep it for the single PUT."""


class BufferedPart(PartWriter):
    """Buffers one part; ``commit`` hands the complete buffer to the upload (no second copy)."""

    def __init__(self, upload: BufferedUpload, index: int, length: int) -> None:
        self.upload = upload
        self.index = index
        self.length = length
        self.buffer: bytearray | None = None
        self.pos = 0

    def write(self, data: bytes | memoryview) -> None:
        if not self.buffer:  # not taken yet, or handed over by commit
            self.buffer = BUFFERS.take(self.length)
        end = self.pos + len(data)
        if end > self.length:
            raise RetryableError(
                f"part {self.index} of {self.upload.path} got too many bytes", obj=self.upload.describe
            )
        self.buffer[self.pos : end] = data
        self.pos = end

    def commit(self) -> None:
        if self.pos != self.length:
            raise RetryableError(f"part {self.index} of {self.upload.path} ended early", obj=self.upload.describe)
        data, self.buffer = self.buffer if self.buffer is not None else bytearray(), bytearray()
        self.upload.commit_part(self.index, data)  # the upload owns the buffer now

    def discard(self) -> None:
        """Forget what was written (the engine fetches the part again from its start)."""
        if self.buffer is not None:
            BUFFERS.give(self.buffer)
        self.buffer = None
        self.pos = 0
