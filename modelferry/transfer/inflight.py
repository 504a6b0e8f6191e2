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


def files_in_flight(concurrency: int, files: int) -> int:
    """How many files to interleave at once.

    One file's sha256 runs on one core (about 1.4 GB/s), so several files must be
    in flight to use more; about eight connections per file keep each in-order
    hash fed while few out-of-order bytes wait in memory.
    """
    return max(1, min(files, max(2, concurrency // 8)))


SMALL_FILE = 1 << 20  # a plan whose files average less than this is latency- and CPU-bound, not bandwidth-bound
SMALL_FILE_WORKERS = 32


def worker_count(concurrency: int, parts: int, copies: int, copy_bytes: int) -> int:
    """Worker threads (one connection each) for a plan of ``copies`` files, ``copy_bytes`` in all.

    At most ``concurrency`` and never more than there are ``parts`` to take. For small files the
    cost is per request, not per byte: on two cores 64 threads each fetching a few KiB spent their
    time handing the GIL to each other (measured: 270-330 files/s at 64 against 510 at 16 or 32,
    the same CPU per file), while 32 connections still keep 1,600 requests a second in flight at
    a 20 ms round trip.
    """
    workers = min(concurrency, parts)
    if copies and copy_bytes < SMALL_FILE * copies:
        workers = min(workers, SMALL_FILE_WORKERS)
    return max(1, workers)


def scheduling_part_size(size: int, part_size: int, concurrency: int, group: int) -> int:
    """The part size for a file written in place (local targets), at most ``part_size``.

    Each file of a group gets about ``concurrency // group`` connections; with at
    least four parts per connection the in-order hash keeps pace with the download
    instead of running after it (measured: 64 MiB parts for 512 MiB shards left most
    hashing to the end). Never below 8 MiB, where per-request costs start to show.
    """
    per_file = max(1, concurrency // max(1, group))
    want = -(-size // (4 * per_file))
    want = -(-want // MiB) * MiB
    return min(part_size, max(want, 8 * MiB))


def interleave(part_counts: list[int], group: int) -> list[tuple[int, int]]:
    """(file index, part index) in queue order: files in groups of ``group``, parts round-robin within a group.

    Within a file parts stay in file order, so each in-order hash rarely waits on
    a late early range; across the group's files they alternate, so the group's
    hashes run in parallel instead of one file at a time.
    """
    order: list[tuple[int, int]] = []
    for first in range(0, len(part_counts), max(1, group)):
        members = range(first, min(first + max(1, group), len(part_counts)))
        longest = max(part_counts[m] for m in members)
        for idx in range(longest):
            order.extend((m, idx) for m in members if idx < part_counts[m])
    return order


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


@dataclass(eq=False, slots=True)
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
    stored_prefix: int = 0  # parts [0, stored_prefix) are stored at the target (resume checkpoints)
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
        self.stored_prefix = 0

    def fingerprint(self) -> str:
        i = self.info
        return hashlib.sha256(
            # mtime: a local source file rewritten in place keeps its size but must not be resumed into.
            f"{i.sha256}|{i.git_sha1}|{i.etag}|{i.md5}|{i.size}|{i.version}|{i.mtime_ns}|{self.part_size}".encode()
        ).hexdigest()[:32]

    def wants(self) -> tuple[bool, bool]:
        """(md5, git_sha1) whole-file hashes needed besides sha256."""
        e = self.item.expected
        return (bool(e.md5) and not e.sha256, bool(e.git_sha1) and not e.sha256)
