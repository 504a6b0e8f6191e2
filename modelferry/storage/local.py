"""Local directories (``file://`` and plain paths) and mounted PVCs (``pvc://``).

Writes go through :mod:`modelferry.storage.local_upload` (partial file, journal,
atomic rename) and never follow a symbolic link below the root; reads of a
source follow only links that stay inside it (:mod:`modelferry.storage.local_tree`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from modelferry.errors import (
    ModelferryError,
    NotFoundError,
    PermanentError,
    RetryableError,
    UnsafePathError,
    UsageError,
)
from modelferry.storage.base import (
    MANIFEST_DIR,
    PARTIAL_DIR,
    ObjectInfo,
    Store,
    StoreFeatures,
    Upload,
    partial_stem,
)
from modelferry.storage.dir_handles import DirHandles
from modelferry.storage.local_tree import Listing, inside, link_roots, opened_path
from modelferry.storage.local_upload import _JOURNAL_RE, _PARTIAL_RE, KnownJournals, LocalUpload, translate_os_error
from modelferry.storage.nofollow import (
    create_file,
    fsync_dir,
    opened_dir,
    opened_root,
    rename_durably,
    split_rel,
)
from modelferry.storage.tempfiles import hold, sweep, temp_name
from modelferry.uri import StorageURI, safe_relpath

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
__all__ = ["PARTIAL_DIR", "LocalStore", "LocalUpload", "partial_stem", "translate_os_error"]


class LocalStore(Store):
    """A directory on a local or mounted filesystem.

    As a target, nothing below the root is written through a symbolic link
    (:mod:`modelferry.storage.nofollow`). As a source, links are followed only
    when they resolve inside the root (or a Hugging Face cache's ``blobs/``), unless
    ``follow_symlinks`` (:mod:`modelferry.storage.local_tree`).
    """

    features = StoreFeatures(random_write=True)

    def __init__(self, uri: StorageURI, root: Path, *, follow_symlinks: bool = False) -> None:
        self.uri = uri
        self.root = root
        self.follow_symlinks = follow_symlinks
        self._roots: tuple[str, ...] | None = None
        self.dirs = DirHandles(root)  # descriptors of the directories written into, kept for the run
        self.journals = KnownJournals()

    def identity(self) -> str:
        return f"file:{self.root}"

    def local_path(self, path: str) -> Path:
        return self.root / safe_relpath(path, obj=self.describe(path))

    def describe(self, path: str = "") -> str:
        # os.path.join, not Path: pathlib interns every component, a dict that grows with every file name.
        return os.path.join(self.root, path) if path else str(self.root)

    def resolve(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root} is a file, not a directory", obj=str(self.root))

    def link_roots(self) -> tuple[str, ...]:
        if self._roots is None:
            self._roots = link_roots(self.root)
        return self._roots

    def list(self) -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        yield from Listing(self.root, follow_all=self.follow_symlinks, roots=self.link_roots()).walk()

    def stat(self, path: str) -> ObjectInfo | None:
        try:
            st = os.stat(self.local_path(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)

    def _open_read(self, path: str) -> int:
        """A descriptor of ``path``, refusing one that really lies outside the link roots (a swapped link)."""
        target = self.local_path(path)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise translate_os_error(exc, str(target)) from exc
        if not self.follow_symlinks:
            real = opened_path(fd)
            if real is not None and not inside(real, self.link_roots()):
                os.close(fd)
                raise UnsafePathError(
                    f"refusing to read {target}: it now resolves to {real}, outside the source",
                    obj=str(target),
                    hint="A link under the source changed while it was copied; check who writes there",
                )
        return fd

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        target = self.local_path(path)
        fd = self._open_read(path)
        try:
            pos, end = start, start + length
            while pos < end:
                chunk = os.pread(fd, min(READ_CHUNK, end - pos), pos)
                if not chunk:
                    raise RetryableError(f"{target} shrank while being read", obj=str(target))
                pos += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    def read_bytes(self, path: str) -> bytes | None:
        try:
            fd = self._open_read(path)
        except NotFoundError:
            return None
        except PermanentError as exc:
            if isinstance(exc.__cause__, NotADirectoryError):
                return None
            raise
        with open(fd, "rb") as fh:
            try:
                return fh.read()
            except OSError as exc:  # a directory planted at a file's name, an I/O error
                raise translate_os_error(exc, self.describe(path)) from exc

    def open_upload(self, path: str, size: int, part_size: int, *, fingerprint: str = "") -> Upload:
        return LocalUpload(self, path, size, part_size, fingerprint)

    @contextlib.contextmanager
    def many_writes(self) -> Iterator[None]:
        """Keep the directories written into open, and sync them once when the scope ends, not per file."""
        self.journals.forget()  # another process may have left journals since this store last looked
        try:
            with self.dirs.keeping():
                yield
        except OSError as exc:
            raise translate_os_error(exc, self.describe()) from exc

    def put_bytes(self, path: str, data: bytes) -> None:
        """Write a small file (the manifest) atomically and durably, never through a link."""
        final = self.local_path(path)
        parents, name = split_rel(path)
        try:
            with (
                opened_root(self.root, create=True) as root,
                opened_dir(root, parents, create=True, describe=str(self.root)) as parent,
            ):
                sweep(parent, str(final.parent))
                temp = temp_name(name, "modelferry")
                fd = create_file(parent, temp, str(final))
                try:
                    hold(fd)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                    rename_durably(parent, temp, parent, name)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(temp, dir_fd=parent)
                    raise
                finally:
                    os.close(fd)
        except OSError as exc:
            raise translate_os_error(exc, str(final)) from exc

    def delete(self, path: str) -> None:
        """Remove a file (the manifest) and make the removal durable; links on the way are refused."""
        parents, name = split_rel(safe_relpath(path, obj=self.describe(path)))
        try:
            with (
                opened_root(self.root, create=False) as root,
                opened_dir(root, parents, create=False, describe=str(self.root)) as parent,
            ):
                os.unlink(name, dir_fd=parent)
                fsync_dir(parent)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise translate_os_error(exc, self.describe(path)) from exc

    def free_space(self) -> int | None:
        """The volume's free bytes plus the blocks the partial files a resumed copy writes into already hold."""
        probe = self.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return shutil.disk_usage(probe).free + self.resumable_bytes()

    def resumable_bytes(self) -> int:
        """Disk held by the partial files of multi-part copies (those with a journal): a resumed copy reuses it.

        A partial's blocks are reserved for the whole file when it is created, so without this an
        interrupted copy would be counted twice by the space checks of the next attempt.
        """
        total = 0
        with (
            contextlib.suppress(OSError, ModelferryError),
            opened_root(self.root, create=False) as root,
            opened_dir(root, [MANIFEST_DIR, "partial"], create=False, describe=str(self.root)) as partial,
        ):
            for names in _partial_groups(partial).values():
                if not any(_JOURNAL_RE.match(name) for name in names):
                    continue  # a one-part leftover: swept, not resumed
                for name in names:
                    if _PARTIAL_RE.match(name):
                        with contextlib.suppress(OSError):
                            st = os.stat(name, dir_fd=partial, follow_symlinks=False)
                            if stat.S_ISREG(st.st_mode):
                                total += st.st_blocks * 512
        return total

    def cleanup_partials(self, keep: Iterable[str] | None = None, *, older_than: float | None = None) -> None:
        """Remove stale partial files and temp files, then the partial directory when nothing is left in it.

        With ``keep`` (the paths of the finished plan), a ``.part``/``.journal`` pair that belongs
        to none of them (left by a run with other --include/--exclude filters, or a file gone from
        the source), or a ``.part`` without a journal (a one-part file: nothing to resume), is removed. Pairs touched at or after ``older_than`` (epoch seconds: this run's
        start) are left alone, so a concurrent run's partials in flight are never pulled away.
        Directories are opened without following links, so a planted link is never walked.
        """
        self.journals.forget()
        with (
            contextlib.suppress(OSError, ModelferryError),
            opened_root(self.root, create=False) as root,
            opened_dir(root, [MANIFEST_DIR], create=False, describe=str(self.root)) as meta,
        ):
            sweep(meta, str(self.root / MANIFEST_DIR))
            with opened_dir(meta, ["partial"], create=False, describe=str(self.root)) as partial:
                if keep is not None:
                    self._remove_stale(partial, keep, older_than)
            os.rmdir("partial", dir_fd=meta)

    def _remove_stale(self, partial: int, keep: Iterable[str], older_than: float | None) -> None:
        groups = _partial_groups(partial)
        if not groups:
            return  # the usual case: ``keep`` (maybe a million paths) is never read
        wanted = {partial_stem(path) for path in keep}
        for stem, names in groups.items():
            # Only a journal makes a partial resumable: one without (a one-part file) is stale once old.
            resumable = stem in wanted and any(_JOURNAL_RE.match(name) for name in names)
            if resumable or (older_than is not None and _newest_mtime(partial, names) >= older_than):
                continue
            log.info("removing stale partial download %s", _journal_path_name(partial, names) or stem)
            for name in names:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=partial)


def _partial_groups(partial: int) -> dict[str, list[str]]:
    """The partial directory's ``.part`` and ``.journal`` names, by the stem of the file they belong to."""
    groups: dict[str, list[str]] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir(partial):
            if _PARTIAL_RE.match(name) or _JOURNAL_RE.match(name):
                groups.setdefault(name[:24], []).append(name)
    return groups


def _newest_mtime(dir_fd: int, names: list[str]) -> float:
    newest = 0.0
    for name in names:
        with contextlib.suppress(OSError):
            newest = max(newest, os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mtime)
    return newest


def _journal_path_name(dir_fd: int, names: list[str]) -> str | None:
    """The path named in a journal's header line (for the log), None when unreadable."""
    for name in names:
        if name.endswith(".journal"):
            with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                with open(fd) as fh:
                    found = json.loads(fh.readline()).get("path")
                return str(found) if found else None
    return None
