"""Checksums computed while bytes are in memory, in file order.

Parts of one file arrive out of order from many connections. The
:class:`InOrderHasher` hashes each chunk as soon as everything before it has
been hashed; chunks that arrive early are held in memory up to a budget and,
past it, are read back from the target file later (local targets only). This
keeps sha256 at memory speed without a second pass over the data in the common
case, with memory bounded whatever the file size.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from modelferry.checksums import clean_etag
from modelferry.hashstate import HashCheckpoint, ResumableHash
from modelferry.storage.base import ObjectInfo

READ_BACK_CHUNK = 4 << 20


def multipart_etag(part_md5s: list[bytes]) -> str:
    """The S3/Oracle multipart checksum: md5 of the concatenated part md5s, then ``-N``."""
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"  # noqa: S324 - protocol


@dataclass(frozen=True)
class Expectation:
    """What the bytes must hash to, strongest first."""

    sha256: str | None = None
    git_sha1: str | None = None
    md5: str | None = None
    multipart_etag: str | None = None  # "hex-N", needs parts of ``part_size``
    part_size: int | None = None

    @classmethod
    def for_object(cls, info: ObjectInfo) -> Expectation:
        etag = clean_etag(info.etag)
        multipart = etag if etag and info.multipart_count else None
        md5 = info.md5
        if md5 is None and etag and not multipart and len(etag) == 32 and all(c in "0123456789abcdef" for c in etag):
            md5 = etag  # a single-part S3 ETag is the object's MD5 (not for SSE-KMS; then it will not match twice)
        return cls(
            sha256=info.sha256,
            git_sha1=info.git_sha1,
            md5=md5,
            multipart_etag=multipart if info.part_size else None,
            part_size=info.part_size if multipart else None,
        )

    @property
    def strength(self) -> str:
        if self.sha256:
            return "sha256"
        if self.git_sha1:
            return "git-sha1"
        if self.md5:
            return "md5"
        if self.multipart_etag:
            return "multipart-etag"
        return "size"


class Digest(Protocol):
    """What the hasher needs of a digest: hashlib's objects and :class:`ResumableHash` both fit."""

    @property
    def name(self) -> str: ...

    def update(self, data: bytes | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


class InOrderHasher:
    """sha256 (always) plus md5 / git-sha1 when asked, fed out of order, hashed in order."""

    def __init__(
        self,
        size: int,
        *,
        md5: bool = False,
        git_sha1: bool = False,
        read_back: Callable[[int, int], bytes | None] | None = None,
        budget: int | None = None,
        checkpoints: Collection[int] | None = None,
        resume: HashCheckpoint | None = None,
    ) -> None:
        self.size = size
        # Uploads that resume across runs save the hash state at part ends (``checkpoints``).
        resumable = checkpoints is not None or resume is not None
        states = resume.states if resume is not None else {}

        def new(name: str) -> Digest:
            if resumable:
                return ResumableHash(name, states.get(name))
            return hashlib.new(name)

        self._hashers: list[Digest] = [new("sha256")]
        self._md5 = new("md5") if md5 else None
        if self._md5 is not None:
            self._hashers.append(self._md5)
        self._sha1 = None
        if git_sha1:
            self._sha1 = new("sha1")
            if resume is None:
                self._sha1.update(f"blob {size}\0".encode())  # git's object id covers this header
            self._hashers.append(self._sha1)
        self._read_back = read_back
        self._budget = budget
        self._lock = threading.Lock()
        self._done_cond = threading.Condition(self._lock)
        self._next = resume.position if resume is not None else 0
        self._hashing = False
        self._pending: dict[int, bytes | memoryview] = {}
        self._pending_bytes = 0
        self._on_disk: list[tuple[int, int]] = []
        self._checkpoints = frozenset(checkpoints or ())
        self._snapshots: dict[int, HashCheckpoint] = {}
        self.read_back_bytes = 0

    @property
    def position(self) -> int:
        return self._next

    def mark_on_disk(self, start: int, end: int) -> None:
        """Bytes [start, end) are in the target file (resumed parts); hash them from there."""
        with self._lock:
            if end > self._next:
                self._on_disk.append((max(start, self._next), end))
        self.pump()

    def feed(self, offset: int, data: bytes | memoryview) -> None:
        """Offer bytes at ``offset``. Bytes before the hashed position are ignored (retries)."""
        end = offset + len(data)
        with self._lock:
            if end <= self._next:
                return
            if offset < self._next:
                data = memoryview(data)[self._next - offset :]
                offset = self._next
            if offset == self._next and not self._hashing:
                self._hashing = True
            else:
                if self._budget is None or self._read_back is None or self._pending_bytes + len(data) <= self._budget:
                    old = self._pending.get(offset)  # a retried range replaces its first attempt
                    self._pending_bytes += len(data) - (len(old) if old is not None else 0)
                    self._pending[offset] = data
                else:
                    self._on_disk.append((offset, end))
                return
        self._run(data)

    def pump(self) -> None:
        """Hash whatever is ready, in the calling thread."""
        with self._lock:
            if self._hashing:
                return
            take = self._take_locked()
            if take is None:
                return
            self._hashing = True
        self._run(take)

    def _take_locked(self) -> bytes | memoryview | tuple[int, int] | None:
        """The next in-order bytes, or (offset, length) to read back outside the lock, or None."""
        pos = self._next
        for start in list(self._pending):
            data = self._pending[start]
            end = start + len(data)
            if end <= pos:
                del self._pending[start]
                self._pending_bytes -= len(data)
            elif start <= pos:
                del self._pending[start]
                self._pending_bytes -= len(data)
                return data if pos == start else memoryview(data)[pos - start :]
        for i, (start, end) in enumerate(self._on_disk):
            if end <= pos:
                continue
            if start <= pos:
                if self._read_back is None:
                    raise RuntimeError("hasher lost bytes it cannot read back")
                length = min(end - pos, READ_BACK_CHUNK)
                if pos + length >= end:
                    del self._on_disk[i]
                return (pos, length)
        self._on_disk = [r for r in self._on_disk if r[1] > pos]
        return None

    def _read(self, offset: int, length: int) -> bytes:
        # Outside the lock: other threads keep feeding while this one reads the file.
        assert self._read_back is not None
        back = self._read_back(offset, length)
        if back is None or len(back) != length:
            raise RuntimeError("short read back from the target file")
        self.read_back_bytes += length
        return back

    def _run(self, data: bytes | memoryview | tuple[int, int] | None) -> None:
        while data is not None:
            if isinstance(data, tuple):
                try:
                    data = self._read(*data)
                except BaseException:
                    with self._lock:
                        self._hashing = False
                    raise
            for h in self._hashers:
                h.update(data)
            with self._lock:
                self._next += len(data)
                if self._next in self._checkpoints:  # only this thread hashes: the states are consistent
                    self._snapshots[self._next] = HashCheckpoint(
                        self._next, {h.name: h.state() for h in self._hashers if isinstance(h, ResumableHash)}
                    )
                try:
                    data = self._take_locked()
                except BaseException:
                    self._hashing = False
                    raise
                if data is None:
                    self._hashing = False
                    self._done_cond.notify_all()

    def checkpoint_within(self, limit: int) -> HashCheckpoint | None:
        """The latest saved state at or before byte ``limit`` (older ones are dropped), or None."""
        with self._lock:
            best = max((p for p in self._snapshots if p <= limit), default=None)
            if best is None:
                return None
            for p in [p for p in self._snapshots if p < best]:
                del self._snapshots[p]
            return self._snapshots[best]

    def wait_complete(self, timeout: float | None = None) -> bool:
        """Block until every byte is hashed (another thread may be hashing)."""
        self.pump()
        with self._lock:
            return self._done_cond.wait_for(lambda: self._next >= self.size and not self._hashing, timeout)

    def sha256(self) -> str:
        return self._hashers[0].hexdigest()

    def md5(self) -> str | None:
        return self._md5.hexdigest() if self._md5 else None

    def git_sha1(self) -> str | None:
        return self._sha1.hexdigest() if self._sha1 else None


def check(
    expected: Expectation,
    *,
    size: int,
    got_size: int,
    sha256: str,
    md5: str | None,
    git_sha1: str | None,
    part_md5s: list[bytes] | None,
) -> str | None:
    """None when the bytes are right, else a description of the mismatch."""
    if got_size != size:
        return f"size {got_size} != expected {size}"
    if expected.sha256 and sha256 != expected.sha256.lower():
        return f"sha256 {sha256} != expected {expected.sha256}"
    if expected.git_sha1 and git_sha1 and git_sha1 != expected.git_sha1.lower():
        return f"git blob sha1 {git_sha1} != expected {expected.git_sha1}"
    if expected.md5 and md5 and md5 != expected.md5.lower():
        return f"md5 {md5} != expected {expected.md5}"
    if expected.multipart_etag and part_md5s is not None:
        got = multipart_etag(part_md5s)
        if got != expected.multipart_etag:
            return f"multipart ETag {got} != expected {expected.multipart_etag}"
    return None
