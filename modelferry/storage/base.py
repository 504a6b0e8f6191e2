"""The one small storage interface every backend implements.

A :class:`Store` is rooted at a :class:`~modelferry.uri.StorageURI` (a directory
or an object prefix). Paths passed to it are relative to that root and use ``/``.
Reading is ranged and streamed; writing goes through an :class:`Upload` that
takes parts in any order and becomes visible under its final name only on
:meth:`Upload.complete`.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from modelferry.errors import UsageError
from modelferry.hashstate import HashCheckpoint
from modelferry.uri import StorageURI

MANIFEST_DIR = ".modelferry"
MANIFEST_NAME = f"{MANIFEST_DIR}/manifest.json"
PARTIAL_DIR = f"{MANIFEST_DIR}/partial"  # unfinished writes and their resume journals


def partial_stem(path: str) -> str:
    """The name stem of ``path``'s partial write and journal under ``.modelferry/partial``."""
    return hashlib.sha256(path.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One file at a source or target, with whatever checksums the store offers."""

    path: str
    size: int
    sha256: str | None = None  # hex; Hub LFS oid, our manifest, or x-amz-checksum
    md5: str | None = None  # hex MD5 of the whole object (single-part ETag, Content-MD5)
    etag: str | None = None  # the raw ETag as the store gives it (may be "hex-N")
    part_size: int | None = None  # part size of a multipart object when known
    git_sha1: str | None = None  # Hub git blob oid for non-LFS files
    version: str | None = None  # revision / version id, informational
    mtime_ns: int | None = None  # local files: modification time

    @property
    def multipart_count(self) -> int | None:
        """Number of parts when the ETag is a multipart ETag (``<md5 hex>-N``).

        Only an MD5 (32 hex digits) before the dash counts: other servers' ETags that merely
        end in ``-digits`` (nginx's ``<mtime hex>-<size hex>``) are opaque, not multipart.
        """
        if self.etag and "-" in self.etag:
            head, tail = self.etag.strip().strip('"').rsplit("-", 1)  # ETags often arrive quoted
            if tail.isdigit() and len(head) == 32 and all(c in "0123456789abcdefABCDEF" for c in head):
                return int(tail)
        return None


@dataclass(frozen=True)
class FileSink:
    """Where a source may put a range's bytes itself, without them passing through Python: ``fd`` at ``offset``.

    ``translate`` turns an ``OSError`` of writing to ``fd`` into the target's error (disk full...).
    """

    fd: int
    offset: int
    translate: Callable[[OSError], Exception]


class InPlace(int):
    """What :meth:`Store.read_into` yields for bytes it wrote into the sink itself: how many."""


class PartWriter(abc.ABC):
    """Receives the bytes of one part, in order, then is committed or discarded."""

    @abc.abstractmethod
    def write(self, data: bytes | memoryview) -> None: ...

    @abc.abstractmethod
    def commit(self) -> None:
        """The part is complete and durable enough to be journaled."""

    def discard(self) -> None:  # noqa: B027 - optional hook
        """The attempt failed; forget what was written (the part will be retried)."""


class FilePartWriter(PartWriter):
    """A part written into a file a source may also write to directly (local targets)."""

    @abc.abstractmethod
    def sink(self) -> FileSink:
        """The file and offset the next bytes go to."""

    @abc.abstractmethod
    def advance(self, count: int) -> None:
        """``count`` bytes were written through :meth:`sink` by the source."""


class Upload(abc.ABC):
    """A file being written: parts in any order, then :meth:`complete` or :meth:`abort`."""

    path: str
    size: int
    part_size: int

    #: True when the parts' bytes stay in memory until committed (object stores).
    buffers_parts: bool = False

    def finished_parts(self) -> set[int]:
        """Parts already written by an earlier, interrupted run (resume)."""
        return set()

    def read_back(self, offset: int, length: int) -> bytes | None:
        """Bytes already written at ``offset`` (for hashing resumed parts); None if impossible."""
        return None

    #: True when the upload keeps hash checkpoints so a later run can resume it without
    #: reading its finished parts again (object-store multipart uploads).
    resumable: bool = False

    def resume_point(self) -> HashCheckpoint | None:
        """Where an earlier run left off: every part before ``position`` is stored and hashed."""
        return None

    def save_checkpoint(self, checkpoint: HashCheckpoint) -> None:  # noqa: B027 - optional hook
        """Every part before ``checkpoint.position`` is stored: remember the hash state there."""

    def stored_part_md5(self, index: int) -> bytes | None:
        """MD5 of a part stored by an earlier run (multipart ETag checks), when the upload knows it."""
        return None

    @abc.abstractmethod
    def part(self, index: int, offset: int, length: int) -> PartWriter: ...

    @abc.abstractmethod
    def complete(self) -> str | None:
        """Make the file visible under its final name. Returns the target's ETag if any."""

    @abc.abstractmethod
    def abort(self, *, keep_partial: bool = False) -> None:
        """Give up. ``keep_partial`` keeps resumable state (retryable failures)."""


@dataclass
class StoreFeatures:
    """What a store can do, so the engine can choose the fastest safe path."""

    random_write: bool = False  # local files: parts written in place
    min_part_size: int = 1
    max_parts: int = 1_000_000
    server_side_copy: bool = False
    extra: dict[str, str] = field(default_factory=dict)


class Store(abc.ABC):
    """A directory-like view of one storage location."""

    uri: StorageURI
    features: StoreFeatures = StoreFeatures()

    @property
    def revision(self) -> str | None:
        """The pinned source revision (Hub commit sha), if the store has one."""
        return None

    def identity(self) -> str:
        """Two stores with the same identity can copy server-side."""
        return f"{self.uri.scheme}:{id(self)}"

    def resolve(self) -> None:  # noqa: B027 - optional hook
        """Pin moving references (Hub branches) and check the location exists."""

    @abc.abstractmethod
    def list(self) -> Iterator[ObjectInfo]:
        """Every file under the root, recursively, paginated under the hood."""

    def stat(self, path: str) -> ObjectInfo | None:
        for info in self.list():
            if info.path == path:
                return info
        return None

    @abc.abstractmethod
    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        """Stream ``length`` bytes of ``path`` from ``start`` in chunks."""

    def read_into(
        self, path: str, start: int, length: int, sink: FileSink, *, info: ObjectInfo | None = None
    ) -> Iterable[bytes | InPlace]:
        """Like :meth:`read`, but bytes may go straight into ``sink`` (yielded as :class:`InPlace` counts).

        Sources that can move bytes from a socket to a file in the kernel (``splice``) override
        this; the default reads as usual.
        """
        return self.read(path, start, length, info=info)

    def read_bytes(self, path: str) -> bytes | None:
        """A small whole file, or None if it does not exist (manifests)."""
        info = self.stat(path)
        if info is None:
            return None
        return b"".join(self.read(path, 0, info.size, info=info))

    def open_upload(self, path: str, size: int, part_size: int, *, fingerprint: str = "") -> Upload:
        """Start writing ``path``. ``fingerprint`` identifies the source version for resume.

        Source-only stores (the Hub, the decrypting view) keep this default.
        """
        raise UsageError(
            f"{self.uri.scheme}:// cannot be a sync target",
            obj=str(self.uri),
            hint="Sync to a directory, a pvc:// path or a bucket (s3://, cos://, oci://)",
        )

    def put_bytes(self, path: str, data: bytes) -> None:
        """Write a small file in one go (manifests)."""
        upload = self.open_upload(path, len(data), max(len(data), 1))
        writer = upload.part(0, 0, len(data))
        writer.write(data)
        writer.commit()
        upload.complete()

    def delete(self, path: str) -> None:
        """Remove one file (every target store implements this)."""
        raise UsageError(f"{self.uri.scheme}:// is read-only here: cannot delete {path}", obj=self.describe(path))

    def copy_within(self, source: Store, src: ObjectInfo, target_path: str, part_size: int) -> str | None:
        """Server-side copy from ``source`` (same identity). Returns the new ETag.

        Only called when ``features.server_side_copy`` is set.
        """
        raise UsageError(f"{self.uri.scheme}:// cannot copy server-side", obj=self.describe(target_path))

    def many_writes(self) -> contextlib.AbstractContextManager[None]:
        """A scope in which many files are written: a store may keep handles open and defer syncs to its end.

        The engine runs its workers inside it; the manifest is written after it ends.
        """
        return contextlib.nullcontext()

    def cleanup_partials(self, keep: Iterable[str] | None = None, *, older_than: float | None = None) -> None:  # noqa: B027
        """Remove leftovers of interrupted writes that no longer belong to a plan (stores that keep any)."""

    def free_space(self) -> int | None:
        """Bytes free at the target, when it is a filesystem."""
        return None

    def describe(self, path: str = "") -> str:
        """A human-readable location for messages."""
        return str(self.uri.child(path)) if path else str(self.uri)

    def interrupt(self) -> None:  # noqa: B027 - optional hook
        """Cancellation: wake reads blocked on the network now (called from another thread).

        Implementations must not close descriptors another thread may still use; reads in
        flight should fail promptly and later ones may fail too. Default: nothing (reads
        then notice cancellation between chunks, within the stall timeout).
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
