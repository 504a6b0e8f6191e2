"""The completion manifest: written last, so its presence means the copy is whole.

``<target>/.modelferry/manifest.json``::

    {"version": 1, "tool": "modelferry/0.1.0", "source": "hf://org/repo",
     "revision": "<commit sha>", "completed": "2026-01-01T00:00:00+00:00",
     "total_size": 123, "files": [{"path": "config.json", "size": 123,
     "sha256": "...", "etag": "...", "source_etag": "...", "part_size": 0}]}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelferry import __version__
from modelferry.errors import PermanentError
from modelferry.storage.base import MANIFEST_NAME, Store

MANIFEST_VERSION = 1


@dataclass(slots=True)
class ManifestEntry:
    path: str
    size: int
    sha256: str | None
    etag: str | None = None  # the target object's ETag when written (bucket targets)
    source_etag: str | None = None  # the source object's ETag, to detect unchanged sources
    part_size: int | None = None  # multipart part size used at the target
    mtime_ns: int | None = None  # local targets: detects in-place edits


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
        body: dict[str, Any] = {
            "version": self.version,
            "tool": self.tool,
            "source": self.source,
            "revision": self.revision,
            "completed": self.completed or datetime.now(UTC).isoformat(),
            "total_size": self.total_size,
            "files": [
                {k: v for k, v in asdict(f).items() if v is not None} for f in sorted(self.files, key=lambda e: e.path)
            ],
        }
        return json.dumps(body, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str = "") -> Manifest:
        try:
            body = json.loads(data)
            files = [
                ManifestEntry(
                    path=str(f["path"]),
                    size=int(f["size"]),
                    sha256=f.get("sha256"),
                    etag=f.get("etag"),
                    source_etag=f.get("source_etag"),
                    part_size=f.get("part_size"),
                    mtime_ns=f.get("mtime_ns"),
                )
                for f in body["files"]
            ]
            return cls(
                source=str(body.get("source", "")),
                revision=body.get("revision"),
                files=files,
                completed=str(body.get("completed", "")),
                tool=str(body.get("tool", "")),
                version=int(body.get("version", 1)),
            )
        except (ValueError, KeyError, TypeError) as exc:
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


def remove_manifest(store: Store) -> None:
    """Before changing a target, withdraw its completion marker."""
    store.delete(MANIFEST_NAME)
