"""One file in flight: its parts, its upload, its hasher, and its verdict."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

from modelferry.storage.base import ObjectInfo, PartWriter, StoreFeatures, Upload
from modelferry.transfer.plan import PlanItem
from modelferry.transfer.verify import Expectation, InOrderHasher

MiB = 1 << 20


def part_layout(size: int, part_size: int, expected: Expectation, target: StoreFeatures) -> tuple[int, bool]:
    """Choose the part size for one file; returns (part_size, aligned_with_source_multipart).

    Parts line up with the source's multipart parts when we know them, so the
    multipart ETag can be recomputed from per-part MD5s in parallel.
    """
    aligned = False
    if expected.multipart_etag and expected.part_size:
        part_size, aligned = expected.part_size, True
    if part_size < target.min_part_size and size > part_size:
        part_size, aligned = target.min_part_size, False
    if size > 0 and -(-size // part_size) > target.max_parts:
        part_size = -(-size // target.max_parts)
        part_size = -(-part_size // MiB) * MiB
        aligned = False
    return max(part_size, 1), aligned


def ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    if size == 0:
        return [(0, 0)]
    return [(off, min(part_size, size - off)) for off in range(0, size, part_size)]


class NullUpload(Upload):
    """Reads a source only to hash it (before a server-side copy)."""

    buffers_parts = True

    def __init__(self, path: str, size: int, part_size: int) -> None:
        self.path, self.size, self.part_size = path, size, part_size

    def part(self, index: int, offset: int, length: int) -> PartWriter:
        return _NullPart()

    def complete(self) -> str | None:
        return None

    def abort(self, *, keep_partial: bool = False) -> None:
        return None


class _NullPart(PartWriter):
    def write(self, data: bytes | memoryview) -> None:
        return None

    def commit(self) -> None:
        return None


@dataclass(eq=False)
class FileJob:
    """Mutable state of one file's transfer; guarded by the engine's lock."""

    item: PlanItem
    part_size: int
    want_part_md5: bool
    server_copy: bool = False
    attempt: int = 0
    parts: list[tuple[int, int]] = field(default_factory=list)
    upload: Upload | None = None
    hasher: InOrderHasher | None = None
    finished: set[int] = field(default_factory=set)
    part_md5: dict[int, bytes] = field(default_factory=dict)
    remaining: int = 0
    committed: set[int] = field(default_factory=set)
    released: set[int] = field(default_factory=set)
    open_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def info(self) -> ObjectInfo:
        return self.item.source

    def reset(self) -> None:
        self.parts = ranges(self.info.size, self.part_size)
        self.upload = None
        self.hasher = None
        self.finished = set()
        self.part_md5 = {}
        self.remaining = len(self.parts)
        self.committed = set()
        self.released = set()

    def fingerprint(self) -> str:
        i = self.info
        return hashlib.sha256(
            f"{i.sha256}|{i.git_sha1}|{i.etag}|{i.md5}|{i.size}|{i.version}|{self.part_size}".encode()
        ).hexdigest()[:32]

    def wants(self) -> tuple[bool, bool]:
        """(md5, git_sha1) whole-file hashes needed besides sha256."""
        e = self.item.expected
        return (bool(e.md5) and not e.sha256, bool(e.git_sha1) and not e.sha256)
