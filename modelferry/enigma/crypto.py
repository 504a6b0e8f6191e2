"""Sealing and opening chunks, and the parallel constant-memory pipelines.

Reading and writing stay in the calling thread in file order; only the AES-GCM
work goes to a thread pool (``cryptography`` releases the GIL), with at most
``2 * workers`` chunks (and about :data:`INFLIGHT_BYTES`, but never fewer than one
per worker) in flight, so memory is bounded by a few chunks whatever the file size.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelferry.cpus import usable_cpus
from modelferry.enigma.format import (
    PREFIX_SIZE,
    SALT_SIZE,
    TAG_SIZE,
    Header,
    KeyBlock,
    nonce,
)
from modelferry.errors import IntegrityError

HKDF_INFO = b"modelferry-enigma/1"
DATA_KEY_SIZE = 32
INFLIGHT_BYTES = 16 << 20  # chunks handed to the pool at once (beyond one per worker)


def default_workers() -> int:
    return max(1, min(8, usable_cpus()))


def file_key(data_key: bytes, salt: bytes) -> AESGCM:
    """The per-file chunk key: HKDF-SHA256 over the data key with the file's salt."""
    if len(data_key) != DATA_KEY_SIZE:
        raise IntegrityError(f"the KMS returned a {len(data_key)}-byte data key; expected {DATA_KEY_SIZE}")
    okm = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=HKDF_INFO).derive(data_key)
    return AESGCM(okm)


def new_header(block: KeyBlock, chunk_size: int, plaintext_size: int | None) -> Header:
    """A fresh header with a random salt and nonce prefix."""
    return Header(
        chunk_size=chunk_size,
        salt=os.urandom(SALT_SIZE),
        nonce_prefix=os.urandom(PREFIX_SIZE),
        plaintext_size=plaintext_size,
        key_block=block,
    )


class ChunkCipher:
    """Seals and opens the chunks of one file."""

    def __init__(self, header: Header, data_key: bytes, *, obj: str | None = None) -> None:
        self.header = header
        self.obj = obj
        self._aead = file_key(data_key, header.salt)
        self._aad = header.fixed

    def seal(self, index: int, plaintext: bytes | memoryview, last: bool) -> bytes:
        return self._aead.encrypt(nonce(self.header.nonce_prefix, index, last), plaintext, self._aad)

    def open(self, index: int, sealed: bytes | memoryview, last: bool) -> bytes:
        try:
            return self._aead.decrypt(nonce(self.header.nonce_prefix, index, last), sealed, self._aad)
        except InvalidTag:
            raise self._failed(index) from None

    def seal_into(self, index: int, plaintext: memoryview, last: bool, out: memoryview) -> int:
        """Seal into ``out`` (exactly ``len(plaintext) + 16`` bytes); returns the bytes written."""
        return int(self._aead.encrypt_into(nonce(self.header.nonce_prefix, index, last), plaintext, self._aad, out))

    def open_into(self, index: int, sealed: memoryview, last: bool, out: memoryview) -> int:
        """Open into ``out`` (exactly ``len(sealed) - 16`` bytes); returns the bytes written."""
        try:
            return int(self._aead.decrypt_into(nonce(self.header.nonce_prefix, index, last), sealed, self._aad, out))
        except InvalidTag:
            raise self._failed(index) from None

    def _failed(self, index: int) -> IntegrityError:
        return IntegrityError(
            f"chunk {index} failed authentication: the file is corrupt, truncated, reordered, "
            "or was sealed under another key",
            obj=self.obj,
            hint="Fetch a fresh copy of the encrypted file and check the KMS key; nothing was written",
        )


def _ordered(
    items: Iterable[tuple[int, bytes, bool]],
    work: Callable[[int, bytes, bool], bytes],
    workers: int,
    chunk_size: int,
) -> Iterator[bytes]:
    """Apply ``work`` to items in parallel, yielding results in input order with a bounded window."""
    if workers <= 1:
        for index, data, last in items:
            yield work(index, data, last)
        return
    window: collections.deque[Future[bytes]] = collections.deque()
    depth = max(workers, min(2 * workers, max(1, INFLIGHT_BYTES // max(1, chunk_size))))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enigma") as pool:
        try:
            for index, data, last in items:
                window.append(pool.submit(work, index, data, last))
                if len(window) >= depth:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for fut in window:
                fut.cancel()


def rechunk(stream: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Pieces of exactly ``size`` bytes (the last may be shorter) from arbitrary pieces."""
    buf = bytearray()
    for piece in stream:
        if not buf and len(piece) == size:
            yield piece  # the common case (a reader that already cuts chunks): no copy
            continue
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


Fill = Callable[[memoryview], int]
Work = Callable[[int, memoryview, bool, memoryview], int]


def pipeline(
    fill: Fill, lengths: list[int], out_size: Callable[[int], int], work: Work, workers: int, obj: str | None
) -> Iterator[memoryview]:
    """Read chunk ``i`` into a pooled buffer with ``fill``, transform it on the pool with ``work`` into
    another pooled buffer, and yield the results in order.

    A yielded view is valid only until the next one is asked for (its buffer is reused): write it
    out at once. Nothing is allocated per chunk, so memory stays at ``depth`` pairs of buffers
    whatever the file size, and the allocator does not fragment across worker threads.
    """
    count = len(lengths)
    biggest = max(lengths)
    # One chunk per worker plus two, so the reader and the writer never starve the pool.
    depth = 1 if workers <= 1 else workers + 2
    free = collections.deque((bytearray(biggest), bytearray(out_size(biggest))) for _ in range(min(depth, count)))
    window: collections.deque[tuple[Future[int] | int, tuple[bytearray, bytearray]]] = collections.deque()

    def emit() -> Iterator[memoryview]:
        pending, slot = window.popleft()
        produced = pending if isinstance(pending, int) else pending.result()
        yield memoryview(slot[1])[:produced]
        free.append(slot)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enigma") if workers > 1 else None
    try:
        for index in range(count):
            if not free:
                yield from emit()
            slot = free.popleft()
            want = lengths[index]
            src = memoryview(slot[0])[:want]
            got = fill(src)
            if got != want:
                raise IntegrityError(
                    f"input ended early: chunk {index} has {got} of {want} bytes",
                    obj=obj,
                    hint="The file is truncated or was written to during the operation",
                )
            target_view = memoryview(slot[1])[: out_size(want)]
            last = index == count - 1
            if pool is None:
                window.append((work(index, src, last, target_view), slot))
            else:
                window.append((pool.submit(work, index, src, last, target_view), slot))
        while window:
            yield from emit()
    finally:
        if pool is not None:
            for pending, _slot in window:
                if not isinstance(pending, int):
                    pending.cancel()
            pool.shutdown(wait=True)


def chunk_lengths(total: int, size: int) -> list[int]:
    """Lengths of the pieces of ``total`` bytes cut every ``size`` (one empty piece for 0)."""
    if total == 0:
        return [0]
    full, rest = divmod(total, size)
    return [size] * full + ([rest] if rest else [])


def seal_pipeline(cipher: ChunkCipher, fill: Fill, plaintext_size: int, workers: int) -> Iterator[memoryview]:
    """Sealed chunks of a plaintext of ``plaintext_size`` bytes read through ``fill``."""
    lengths = chunk_lengths(plaintext_size, cipher.header.chunk_size)
    return pipeline(fill, lengths, lambda n: n + TAG_SIZE, cipher.seal_into, workers, cipher.obj)


def open_pipeline(cipher: ChunkCipher, fill: Fill, body_size: int, workers: int) -> Iterator[memoryview]:
    """Plaintext chunks of a body (everything after the header) of ``body_size`` bytes."""
    lengths = chunk_lengths(body_size, cipher.header.chunk_size + TAG_SIZE)
    return pipeline(fill, lengths, lambda n: n - TAG_SIZE, cipher.open_into, workers, cipher.obj)


def open_stream(
    cipher: ChunkCipher, body: Iterable[bytes], body_size: int, first_index: int, total_chunks: int, workers: int
) -> Iterator[bytes]:
    """Plaintext of sealed chunks ``first_index..`` read from ``body`` (``body_size`` bytes)."""
    sealed = cipher.header.chunk_size + TAG_SIZE

    def items() -> Iterator[tuple[int, bytes, bool]]:
        seen = 0
        for offset, piece in enumerate(rechunk(body, sealed)):
            index = first_index + offset
            seen += len(piece)
            yield index, piece, index == total_chunks - 1
        if seen != body_size:
            raise IntegrityError(f"short read of encrypted data: {seen} of {body_size} bytes", obj=cipher.obj)

    return _ordered(items(), cipher.open, workers, sealed)


ReadAt = Callable[[memoryview, int], int]
WriteAt = Callable[[memoryview, int], None]


def positional_pipeline(
    read_at: ReadAt,
    write_at: WriteAt,
    lengths: list[int],
    in_step: int,
    in_base: int,
    out_step: int,
    out_base: int,
    out_size: Callable[[int], int],
    work: Work,
    workers: int,
    obj: str | None,
) -> None:
    """Local file to local file: each worker reads, seals or opens, and writes its own chunks at their
    offsets (``pread``/``pwrite``), so the kernel copies run in parallel too, not only the AES-GCM.
    Chunk ``i`` is read at ``in_base + i * in_step`` and written at ``out_base + i * out_step``.
    Each worker holds one pair of buffers; the caller publishes the output only if this returns.
    """
    count = len(lengths)
    biggest = max(lengths)
    local = threading.local()

    def one(index: int) -> None:
        if not hasattr(local, "bufs"):
            local.bufs = (bytearray(biggest), bytearray(out_size(biggest)))
        src_buf, target_buf = local.bufs
        want = lengths[index]
        src = memoryview(src_buf)[:want]
        got = read_at(src, in_base + index * in_step)
        if got != want:
            raise IntegrityError(
                f"input ended early: chunk {index} has {got} of {want} bytes",
                obj=obj,
                hint="The file is truncated or was written to during the operation",
            )
        target_view = memoryview(target_buf)[: out_size(want)]
        produced = work(index, src, index == count - 1, target_view)
        write_at(target_view[:produced], out_base + index * out_step)

    if workers <= 1 or count == 1:
        for index in range(count):
            one(index)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enigma") as pool:
        # Submit in windows so an early failure stops the rest quickly and the queue stays small.
        window: collections.deque[Future[None]] = collections.deque()
        try:
            for index in range(count):
                window.append(pool.submit(one, index))
                if len(window) >= 4 * workers:
                    window.popleft().result()
            while window:
                window.popleft().result()
        finally:
            for fut in window:
                fut.cancel()
