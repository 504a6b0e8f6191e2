"""Writing one file into a local directory: the partial file, its resume journal, the final rename.

Files are written under ``<root>/.modelferry/partial/`` (same filesystem, so the
final ``rename`` is atomic), each of more than one part with a journal of finished parts. A run killed
with SIGKILL leaves both behind; the next run with the same source version
resumes from them. Parts are journaled after ``pwrite`` returns: the page cache
survives a killed process, and a machine crash that loses a journaled part is
caught by the end-to-end sha256 check, which then refetches the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import stat
import threading
from pathlib import Path
from typing import Protocol, TextIO

from modelferry.errors import (
    AccessDeniedError,
    InsufficientSpaceError,
    ModelferryError,
    NotFoundError,
    PermanentError,
    RetryableError,
    UnsafePathError,
)
from modelferry.storage.base import PARTIAL_DIR, FilePartWriter, FileSink, PartWriter, Upload, partial_stem
from modelferry.storage.dir_handles import DirHandles, RandomSuffixes
from modelferry.storage.nofollow import create_file, open_file, split_rel
from modelferry.storage.writeback import reserve, start_writeback
from modelferry.uri import safe_relpath


class TargetDir(Protocol):
    """What an upload needs of its store (:class:`~modelferry.storage.local.LocalStore`)."""

    root: Path
    dirs: DirHandles  # directory descriptors kept for the run
    journals: KnownJournals  # which paths may have a journal from an earlier run

    def describe(self, path: str = "") -> str: ...


class KnownJournals:
    """The journal stems in the partial directory: read once per run, then kept up to date (thread-safe).

    A one-part file needs no journal, but must remove one an earlier multi-part attempt left for its
    path; asking this instead of the directory saves a failing ``openat`` per file.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stems: set[str] | None = None

    def may_exist(self, stem: str, dir_fd: int) -> bool:
        with self._lock:
            if self._stems is None:
                self._stems = {name[:24] for name in os.listdir(dir_fd) if _JOURNAL_RE.match(name)}
            return stem in self._stems

    def created(self, stem: str) -> None:
        with self._lock:
            if self._stems is not None:
                self._stems.add(stem)

    def forget(self) -> None:
        """Read the directory again next time (it was swept)."""
        with self._lock:
            self._stems = None


log = logging.getLogger(__name__)

_PARTIAL_RE = re.compile(r"^[0-9a-f]{24}(?:-[0-9a-f]{16})?\.part$")
_JOURNAL_RE = re.compile(r"^[0-9a-f]{24}\.journal$")
_PARTIAL_PARTS = tuple(PARTIAL_DIR.split("/"))
_SUFFIXES = RandomSuffixes()


def translate_os_error(exc: OSError, what: str) -> Exception:
    """Map an OSError to our hierarchy, naming the file."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientSpaceError(
            f"no space left on the target while writing {what}",
            obj=what,
            hint="Free space or choose a larger volume; nothing was left under the final name",
        )
    if exc.errno == errno.EFBIG:  # RLIMIT_FSIZE or the filesystem's file size limit: as final as a full disk
        return InsufficientSpaceError(
            f"file too large for the target while writing {what}: {exc.strerror}",
            obj=what,
            hint="Raise the file size limit (ulimit -f) or use a filesystem that holds files this large",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return AccessDeniedError(
            f"permission denied for {what}: {exc.strerror}",
            obj=what,
            hint="Check the directory's owner and mode (pods run as a random non-root UID on OpenShift)",
        )
    if exc.errno == errno.ENAMETOOLONG:
        return UnsafePathError(
            f"the name {what} is too long for the target filesystem",
            obj=what,
            hint="Rename the file at the source (at most 255 bytes per path component)",
        )
    if exc.errno == errno.ENOENT:
        return NotFoundError(f"{what} does not exist", obj=what)
    if exc.errno in (errno.EIO, errno.EAGAIN, errno.EINTR):
        return RetryableError(f"I/O error on {what}: {exc.strerror}", obj=what)
    return PermanentError(f"cannot access {what}: {exc}", obj=what)


class LocalPart(FilePartWriter):
    def __init__(self, upload: LocalUpload, index: int, offset: int, length: int) -> None:
        self.upload = upload
        self.index = index
        self.start = offset
        self.pos = offset
        self.end = offset + length

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.pwrite(self.upload.fd, view, self.pos)
            except OSError as exc:
                raise translate_os_error(exc, self.upload.describe) from exc
            self.pos += written
            view = view[written:]

    def sink(self) -> FileSink:
        describe = self.upload.describe
        return FileSink(self.upload.fd, self.pos, lambda exc: translate_os_error(exc, describe))

    def advance(self, count: int) -> None:
        self.pos += count

    def commit(self) -> None:
        if self.pos != self.end:
            raise RetryableError(f"part {self.index} of {self.upload.path} ended early", obj=self.upload.describe)
        if not self.upload.single:  # a one-part file is synced right away: nothing to start early
            start_writeback(self.upload.fd, self.start, self.end - self.start)
        self.upload.journal_part(self.index)


class LocalUpload(Upload):
    """A file under ``.modelferry/partial`` with a journal of finished parts.

    The partial file gets an unpredictable name (``<stem>-<random>.part``) that the
    journal's header records, so a resumed run finds it and nobody can plant a link
    at it beforehand; it and the journal are created with ``O_EXCL | O_NOFOLLOW``
    and every directory on the way is opened without following links.
    """

    def __init__(self, store: TargetDir, path: str, size: int, part_size: int, fingerprint: str) -> None:
        self.store = store
        self.path = path
        self.size = size
        self.part_size = part_size
        self.describe = store.describe(path)
        safe_relpath(path, obj=self.describe)  # refuses absolute paths and ".." before anything is created
        self.stem = partial_stem(path)
        partial_dir = store.root / PARTIAL_DIR
        self.journal_name = f"{self.stem}.journal"
        self.journal_path = partial_dir / self.journal_name
        # A file of one part has nothing to resume (its one part is the whole file): no journal; a
        # partial a killed run leaves without one is swept as stale (LocalStore.cleanup_partials).
        self.single = size <= part_size
        self.temp_name = f"{self.stem}-{_SUFFIXES.next()}.part"
        self._lock = threading.Lock()
        self._done: set[int] = set()
        self._journal: TextIO | None = None
        header = {"path": path, "size": size, "part_size": part_size, "fingerprint": fingerprint}
        self.fd = -1
        self.dir_fd = -1
        self._partial_dir: contextlib.ExitStack | None = contextlib.ExitStack()
        try:
            self.dir_fd = self._partial_dir.enter_context(store.dirs.opened(_PARTIAL_PARTS, describe=str(store.root)))
            if self.single:
                self._open_single()
                return
            resumed = self._load_journal(header) if fingerprint else None
            if resumed is not None:
                self.fd = resumed
                log.info("resuming %s: %d parts already on disk", path, len(self._done))
            else:
                self._done = set()
                self._forget_previous()
                self.fd = create_file(self.dir_fd, self.temp_name, self.describe)
                journal_fd = create_file(self.dir_fd, self.journal_name, self.describe)
                store.journals.created(self.stem)
                with open(journal_fd, "w", closefd=True) as fh:
                    fh.write(json.dumps({**header, "partial": self.temp_name}) + "\n")
            os.ftruncate(self.fd, size)
            reserve(self.fd, size)  # a volume too small fails here, before any part is fetched
            self._journal = open(  # noqa: SIM115 - closed in complete/abort
                open_file(self.dir_fd, self.journal_name, os.O_WRONLY | os.O_APPEND, self.describe), "a"
            )
        except OSError as exc:
            error = translate_os_error(exc, self.describe)
            self._discard_failed_open(keep=isinstance(error, RetryableError))
            raise error from exc
        except ModelferryError:
            self._discard_failed_open(keep=False)
            raise

    def _open_single(self) -> None:
        """Create the partial file of a one-part upload (no journal)."""
        if self.store.journals.may_exist(self.stem, self.dir_fd):
            self._forget_previous()  # a journal from an earlier multi-part attempt of this path, and its partial
        self.fd = create_file(self.dir_fd, self.temp_name, self.describe)

    @property
    def temp(self) -> Path:
        return self.store.root / PARTIAL_DIR / self.temp_name

    def _discard_failed_open(self, *, keep: bool) -> None:
        """The engine never sees an upload that failed to open, so clean up here (a permanent error keeps nothing)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        if not keep and self.dir_fd >= 0:
            self._unlink(self.temp_name, self.journal_name)
        self._close_dirs()

    def _close_dirs(self) -> None:
        if self._partial_dir is not None:  # a kept descriptor stays open; one opened for this file is closed
            with contextlib.suppress(OSError):
                self._partial_dir.close()
        self._partial_dir = None
        self.dir_fd = -1

    def _unlink(self, *names: str) -> None:
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.dir_fd)

    def _read_journal(self) -> list[str] | None:
        try:
            fd = open_file(self.dir_fd, self.journal_name, os.O_RDONLY, self.describe)
        except FileNotFoundError:
            return None
        with open(fd) as fh:
            return fh.read().splitlines()

    def _forget_previous(self) -> None:
        """Remove an old journal for this path and the partial file it names (a fresh start)."""
        lines = self._read_journal()
        if lines is None:
            return  # the usual case: no journal, nothing to remove
        if lines:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                old = json.loads(lines[0]).get("partial")
                if isinstance(old, str) and _PARTIAL_RE.match(old) and old.startswith(self.stem):
                    self._unlink(old)
        self._unlink(self.journal_name)

    def _load_journal(self, header: dict[str, object]) -> int | None:
        """The descriptor of the partial file an earlier run left for this version, None to start over."""
        lines = self._read_journal()
        if not lines:
            return None
        try:
            recorded = json.loads(lines[0])
            name = recorded.pop("partial")
            if recorded != header or not isinstance(name, str) or not _PARTIAL_RE.match(name):
                return None
            if not name.startswith(self.stem):
                return None
            for line in lines[1:]:
                with contextlib.suppress(ValueError):  # a torn last line from a kill
                    self._done.add(int(json.loads(line)["i"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            self._done = set()
            return None
        try:
            fd = open_file(self.dir_fd, name, os.O_RDWR, self.describe)
        except FileNotFoundError:
            self._done = set()
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:  # a hard link to someone's file is not resumed into
            os.close(fd)
            self._done = set()
            return None
        self.temp_name = name
        return fd

    def finished_parts(self) -> set[int]:
        return set(self._done)

    def read_back(self, offset: int, length: int) -> bytes | None:
        return os.pread(self.fd, length, offset)

    def part(self, index: int, offset: int, length: int) -> PartWriter:
        return LocalPart(self, index, offset, length)

    def journal_part(self, index: int) -> None:
        with self._lock:
            self._done.add(index)
            if self._journal is None:
                return
            self._journal.write(json.dumps({"i": index}) + "\n")
            self._journal.flush()

    def complete(self) -> str | None:
        try:
            os.fsync(self.fd)
            os.close(self.fd)
            parents, name = split_rel(self.path)
            with self.store.dirs.opened(tuple(parents), describe=str(self.store.root)) as parent:
                try:
                    os.replace(self.temp_name, name, src_dir_fd=self.dir_fd, dst_dir_fd=parent)
                except IsADirectoryError as exc:
                    raise PermanentError(f"{self.describe} is a directory on the target", obj=self.describe) from exc
                # Durable once the directory is synced: now, or before the manifest (DirHandles.settle).
                self.store.dirs.renamed_into(parent)
        except OSError as exc:
            raise translate_os_error(exc, self.describe) from exc
        finally:
            if self._journal is not None:
                self._journal.close()
                self._unlink(self.journal_name)
            self._close_dirs()
        return None

    def abort(self, *, keep_partial: bool = False) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if self._journal is not None:
            with contextlib.suppress(OSError):
                self._journal.close()
        if self.single and self.dir_fd >= 0:
            keep_partial = False  # nothing to resume from one part
        if not keep_partial and self.dir_fd >= 0:
            self._unlink(self.temp_name, self.journal_name)
        self._close_dirs()
