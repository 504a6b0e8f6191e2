"""Listing a local directory under the symbolic-link policy.

By default a link is followed only when it resolves inside the listing's
*link roots*: the directory itself and, when the directory is (inside) a
snapshot of a Hugging Face cache (``<repo>/snapshots/<rev>/``), that repository's
``blobs/`` directory, where the cache keeps the bytes its snapshot links point
to. Any other link (``weights -> /var/run/secrets/...``, ``x -> ../../other-repo``)
is refused with :class:`UnsafePathError`. ``follow_all`` (``--follow-symlinks``)
follows every link. Either way a directory reached twice on one path (a link
loop) is refused, and only regular files are listed (no FIFOs or devices).

A link swapped between this check and a read is caught by the read:
:func:`opened_path` names the file a descriptor really holds, and a read whose
file lies outside the link roots is refused.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelferry.errors import UnsafePathError
from modelferry.storage.base import MANIFEST_DIR, ObjectInfo
from modelferry.storage.tempfiles import is_temp_name

log = logging.getLogger(__name__)

Identity = tuple[int, int]


def link_roots(root: Path) -> tuple[str, ...]:
    """Where links under ``root`` may lead: ``root`` itself, plus the cache's ``blobs/`` for a HF snapshot."""
    real = os.path.realpath(root)
    roots = [real]
    probe = Path(real)
    for candidate in (probe, *probe.parents):
        if candidate.name == "snapshots" and (candidate.parent / "blobs").is_dir():
            roots.append(os.path.realpath(candidate.parent / "blobs"))
            break
    return tuple(roots)


def inside(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


@dataclass
class Listing:
    """What one walk saw: the files and the identity of each."""

    root: Path
    follow_all: bool = False
    roots: tuple[str, ...] = ()

    def walk(self) -> Iterator[ObjectInfo]:
        roots = self.roots or link_roots(self.root)
        top = os.stat(self.root)
        yield from self._dir(str(self.root), "", roots, {(top.st_dev, top.st_ino)})

    def _refuse(self, rel: str, why: str) -> UnsafePathError:
        where = f"{self.root}/{rel}"
        return UnsafePathError(
            f"refusing the symbolic link {where}: {why}",
            obj=where,
            hint="Copy the files it points to into the source directory, or pass --follow-symlinks if you "
            "trust every link under it",
        )

    def _dir(self, path: str, prefix: str, roots: tuple[str, ...], seen: set[Identity]) -> Iterator[ObjectInfo]:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", path, exc)
            return
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            if rel == MANIFEST_DIR or is_temp_name(entry.name):
                continue  # our own records and temp files of interrupted runs are never copied
            is_link = entry.is_symlink()
            if is_link and not self.follow_all:
                target = os.path.realpath(entry.path)
                if not inside(target, roots):
                    raise self._refuse(rel, f"it resolves to {target}, outside the source")
            try:
                st = os.stat(entry.path) if is_link else entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished, or a dangling link
            ident = (st.st_dev, st.st_ino)
            if stat.S_ISDIR(st.st_mode):
                if ident in seen:
                    raise self._refuse(rel, "it leads back to a directory above it (a loop)")
                yield from self._dir(entry.path, rel + "/", roots, seen | {ident})
            elif stat.S_ISREG(st.st_mode):
                yield ObjectInfo(path=rel, size=st.st_size, mtime_ns=st.st_mtime_ns)


def opened_path(fd: int) -> str | None:
    """The real path of the file open on ``fd`` (Linux ``/proc/self/fd``), None where that is unknown."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
