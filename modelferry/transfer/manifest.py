"""The completion manifest: written last, so its presence means the copy is whole.

``<target>/.modelferry/manifest.json``::

    {"version": 1, "tool": "modelferry/0.1.0", "source": "hf://org/repo",
     "revision": "<commit sha>", "completed": "2026-01-01T00:00:00+00:00",
     "total_size": 123, "files": [{"path": "config.json", "size": 123,
     "sha256": "...", "etag": "...", "source_etag": "...", "part_size": 0}]}
"""

from __future__ import annotations

import codecs
import contextlib
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import IO, Any

from modelferry import __version__
from modelferry.errors import PermanentError
from modelferry.storage.base import MANIFEST_NAME, Store

MANIFEST_VERSION = 1
SPOOL_PART = 8 << 20  # manifests up to this size are stored in one call; larger ones a part at a time


@dataclass(slots=True)
class ManifestEntry:
    path: str
    size: int
    sha256: str | None
    etag: str | None = None  # the target object's ETag when written (bucket targets)
    source_etag: str | None = None  # the source object's ETag, to detect unchanged sources
    part_size: int | None = None  # multipart part size used at the target
    mtime_ns: int | None = None  # local targets: detects in-place edits


ENTRY_FIELDS = tuple(f.name for f in fields(ManifestEntry))


@dataclass
class Manifest:
    source: str
    revision: str | None
    files: list[ManifestEntry] = field(default_factory=list)
    completed: str = ""
    tool: str = f"modelferry/{__version__}"
    version: int = MANIFEST_VERSION

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def by_path(self) -> dict[str, ManifestEntry]:
        return {f.path: f for f in self.files}

    def to_json(self) -> bytes:
        with tempfile.TemporaryFile() as spool:
            size = spool_manifest(
                spool,
                self.header(),
                sorted(self.files, key=lambda e: e.path),
                total_size=self.total_size,
            )
            spool.seek(0)
            return spool.read(size)

    def header(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "tool": self.tool,
            "source": self.source,
            "revision": self.revision,
            "completed": self.completed or datetime.now(UTC).isoformat(),
        }

    @classmethod
    def from_json(cls, data: bytes, *, where: str = "") -> Manifest:
        header: dict[str, Any] = {}
        files = list(iter_manifest([data], header, where=where))
        try:
            return cls(
                source=str(header.get("source", "")),
                revision=header.get("revision"),
                files=files,
                completed=str(header.get("completed", "")),
                tool=str(header.get("tool", "")),
                version=int(header.get("version", 1)),
            )
        except (ValueError, TypeError) as exc:
            raise PermanentError(f"unreadable manifest {where}: {exc}", obj=where) from exc


_ENTRY_ENCODER = json.JSONEncoder(separators=(", ", ": "))  # made once: json.dumps with options builds one per call


def entry_json(entry: ManifestEntry) -> str:
    return _ENTRY_ENCODER.encode({n: v for n in ENTRY_FIELDS if (v := getattr(entry, n)) is not None})


def spool_manifest(spool: IO[bytes], header: dict[str, Any], files: Iterable[ManifestEntry], *, total_size: int) -> int:
    """Write a manifest to ``spool`` a line per file (``files`` sorted by path); returns its size in bytes.

    The layout is the same JSON object as ever (``total_size`` before ``files``); one entry per
    line keeps writing and reading it streamable.
    """
    head = json.dumps({**header, "total_size": total_size}, indent=1)
    spool.write(head[: head.rindex("}")].rstrip().encode() + b',\n "files": [')
    sep = b"\n  "
    for entry in files:
        spool.write(sep + entry_json(entry).encode())
        sep = b",\n  "
    spool.write(b"\n ]\n}")
    return spool.tell()


_WS = re.compile(r"[ \t\n\r]*")


class _Reader:
    """Top-level JSON values of a document that arrives in chunks, without holding all of it."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._decode = codecs.getincrementaldecoder("utf-8")()
        self._json = json.JSONDecoder()
        self.buf = ""
        self.pos = 0

    def more(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self.buf = self.buf[self.pos :] + self._decode.decode(chunk)
        self.pos = 0
        return True

    def peek(self) -> str:
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                raise ValueError("the manifest ends early")

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise ValueError(f"expected {char!r} at {self.buf[self.pos : self.pos + 20]!r}")
        self.pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = self._json.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError:
                if not self.more():
                    raise
                continue
            if end == len(self.buf) and self.more():
                continue  # a number may go on in the next chunk
            self.pos = end
            return value


def iter_manifest(chunks: Iterable[bytes], header: dict[str, Any], *, where: str = "") -> Iterator[ManifestEntry]:
    """The entries of a manifest as its bytes arrive; the other top-level fields are put in ``header``.

    Raises :class:`PermanentError` for anything that is not a manifest (the caller re-verifies then).
    """
    reader = _Reader(chunks)
    try:
        reader.expect("{")
        while reader.peek() != "}":
            key = reader.value()
            reader.expect(":")
            if key != "files":
                header[str(key)] = reader.value()
            else:
                reader.expect("[")
                while reader.peek() != "]":
                    f = reader.value()
                    yield ManifestEntry(
                        path=str(f["path"]),
                        size=int(f["size"]),
                        sha256=f.get("sha256"),
                        etag=f.get("etag"),
                        source_etag=f.get("source_etag"),
                        part_size=f.get("part_size"),
                        mtime_ns=f.get("mtime_ns"),
                    )
                    if reader.peek() == ",":
                        reader.pos += 1
                reader.expect("]")
                header["files"] = True
            if reader.peek() == ",":
                reader.pos += 1
        if "files" not in header:
            raise KeyError("files")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise PermanentError(f"unreadable manifest {where}: {exc}", obj=where) from exc


def read_manifest(store: Store) -> Manifest | None:
    """The store's manifest, or None when there is none (or it is unreadable: then we re-verify)."""
    data = store.read_bytes(MANIFEST_NAME)
    if data is None:
        return None
    try:
        return Manifest.from_json(data, where=store.describe(MANIFEST_NAME))
    except PermanentError:
        return None


def write_manifest(store: Store, manifest: Manifest) -> None:
    store.put_bytes(MANIFEST_NAME, manifest.to_json())


def put_spooled(store: Store, path: str, spool: IO[bytes], size: int) -> None:
    """Upload ``size`` bytes of ``spool`` to ``path``: small ones in one go, large ones a part at a time."""
    spool.seek(0)
    if size <= SPOOL_PART:
        store.put_bytes(path, spool.read(size))
        return
    part_size = max(SPOOL_PART, store.features.min_part_size)
    upload = store.open_upload(path, size, part_size)
    try:
        for idx, offset in enumerate(range(0, size, part_size)):
            length = min(part_size, size - offset)
            writer = upload.part(idx, offset, length)
            spool.seek(offset)
            left = length
            while left:
                chunk = spool.read(min(left, 1 << 20))
                if not chunk:
                    raise PermanentError(f"the spooled {path} ended early", obj=store.describe(path))
                writer.write(chunk)
                left -= len(chunk)
            writer.commit()
        upload.complete()
    except BaseException:
        with contextlib.suppress(Exception):
            upload.abort(keep_partial=False)
        raise


def write_manifest_entries(
    store: Store, header: dict[str, Any], entries: Iterable[ManifestEntry], *, total_size: int
) -> None:
    """Write a manifest of any size: spooled to a temporary file, then stored under its final name last."""
    with tempfile.TemporaryFile() as spool:
        size = spool_manifest(spool, header, entries, total_size=total_size)
        put_spooled(store, MANIFEST_NAME, spool, size)


def remove_manifest(store: Store) -> None:
    """Before changing a target, withdraw its completion marker."""
    store.delete(MANIFEST_NAME)
