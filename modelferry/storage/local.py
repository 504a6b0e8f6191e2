"""Local directories (``file://`` and plain paths) and mounted PVCs (``pvc://``).

Files are written under ``<root>/.modelferry/partial/`` (same filesystem, so the
final ``rename`` is atomic), each with a journal of finished parts. A run killed
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
import shutil
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from modelferry.errors import (
    AccessDeniedError,
    InsufficientSpaceError,
    NotFoundError,
    PermanentError,
    RetryableError,
    UsageError,
)
from modelferry.storage.base import (
    MANIFEST_DIR,
    PARTIAL_DIR,
    FilePartWriter,
    FileSink,
    ObjectInfo,
    PartWriter,
    Store,
    StoreFeatures,
    Upload,
    partial_stem,
)
from modelferry.storage.durable_rename import replace_durably
from modelferry.storage.writeback import start_writeback
from modelferry.uri import StorageURI, safe_relpath

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
__all__ = ["PARTIAL_DIR", "LocalStore", "LocalUpload", "partial_stem"]


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
        start_writeback(self.upload.fd, self.start, self.end - self.start)
        self.upload.journal_part(self.index)


class LocalUpload(Upload):
    """A file under ``.modelferry/partial`` with a journal of finished parts."""

    def __init__(self, store: LocalStore, path: str, size: int, part_size: int, fingerprint: str) -> None:
        self.store = store
        self.path = path
        self.size = size
        self.part_size = part_size
        self.describe = store.describe(path)
        self.final = store.local_path(path)
        digest = partial_stem(path)
        partial_dir = store.root / PARTIAL_DIR
        self.temp = partial_dir / f"{digest}.part"
        self.journal_path = partial_dir / f"{digest}.journal"
        self._lock = threading.Lock()
        self._done: set[int] = set()
        header = {"path": path, "size": size, "part_size": part_size, "fingerprint": fingerprint}
        self.fd = -1
        try:
            partial_dir.mkdir(parents=True, exist_ok=True)
            if fingerprint and self._load_journal(header):
                log.info("resuming %s: %d parts already on disk", path, len(self._done))
            else:
                self._done = set()
                with open(self.journal_path, "w") as fh:
                    fh.write(json.dumps(header) + "\n")
            self.fd = os.open(self.temp, os.O_RDWR | os.O_CREAT, 0o644)
            os.ftruncate(self.fd, size)
            self._journal = open(self.journal_path, "a")  # noqa: SIM115 - closed in complete/abort
        except OSError as exc:
            error = translate_os_error(exc, self.describe)
            self._discard_failed_open(keep=isinstance(error, RetryableError))
            raise error from exc

    def _discard_failed_open(self, *, keep: bool) -> None:
        """The engine never sees an upload that failed to open, so clean up here (a permanent error keeps nothing)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        if not keep:
            for leftover in (self.temp, self.journal_path):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def _load_journal(self, header: dict[str, object]) -> bool:
        try:
            lines = self.journal_path.read_text().splitlines()
        except FileNotFoundError:
            return False
        if not lines or not self.temp.exists():
            return False
        try:
            if json.loads(lines[0]) != header:
                return False
            for line in lines[1:]:
                with contextlib.suppress(ValueError):  # a torn last line from a kill
                    self._done.add(int(json.loads(line)["i"]))
        except (ValueError, KeyError, TypeError):
            return False
        return True

    def finished_parts(self) -> set[int]:
        return set(self._done)

    def read_back(self, offset: int, length: int) -> bytes | None:
        return os.pread(self.fd, length, offset)

    def part(self, index: int, offset: int, length: int) -> PartWriter:
        return LocalPart(self, index, offset, length)

    def journal_part(self, index: int) -> None:
        with self._lock:
            self._done.add(index)
            self._journal.write(json.dumps({"i": index}) + "\n")
            self._journal.flush()

    def complete(self) -> str | None:
        try:
            os.fsync(self.fd)
            os.close(self.fd)
            self.final.parent.mkdir(parents=True, exist_ok=True)
            if self.final.is_dir():
                raise PermanentError(f"{self.describe} is a directory on the target", obj=self.describe)
            replace_durably(self.temp, self.final)
        except OSError as exc:
            raise translate_os_error(exc, self.describe) from exc
        finally:
            self._journal.close()
            with contextlib.suppress(OSError):
                self.journal_path.unlink()
        return None

    def abort(self, *, keep_partial: bool = False) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(OSError):
            self._journal.close()
        if not keep_partial:
            for leftover in (self.temp, self.journal_path):
                with contextlib.suppress(OSError):
                    leftover.unlink()


class LocalStore(Store):
    """A directory on a local or mounted filesystem."""

    features = StoreFeatures(random_write=True)

    def __init__(self, uri: StorageURI, root: Path) -> None:
        self.uri = uri
        self.root = root

    def identity(self) -> str:
        return f"file:{self.root}"

    def local_path(self, path: str) -> Path:
        return self.root / safe_relpath(path, obj=self.describe(path))

    def describe(self, path: str = "") -> str:
        return str(self.root / path) if path else str(self.root)

    def resolve(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root} is a file, not a directory", obj=str(self.root))

    def list(self) -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == MANIFEST_DIR or rel_dir.startswith(MANIFEST_DIR + os.sep):
                dirnames[:] = []
                continue
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                try:
                    st = os.stat(full)
                except OSError:
                    continue  # vanished or a dangling link
                yield ObjectInfo(path=rel, size=st.st_size, mtime_ns=st.st_mtime_ns)

    def stat(self, path: str) -> ObjectInfo | None:
        try:
            st = os.stat(self.local_path(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        target = self.local_path(path)
        try:
            fd = os.open(target, os.O_RDONLY)
        except OSError as exc:
            raise translate_os_error(exc, str(target)) from exc
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
            return self.local_path(path).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def open_upload(self, path: str, size: int, part_size: int, *, fingerprint: str = "") -> Upload:
        return LocalUpload(self, path, size, part_size, fingerprint)

    def put_bytes(self, path: str, data: bytes) -> None:
        final = self.local_path(path)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            temp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
            with open(temp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, final)
        except OSError as exc:
            raise translate_os_error(exc, str(final)) from exc

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.local_path(path).unlink()

    def free_space(self) -> int | None:
        probe = self.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return shutil.disk_usage(probe).free

    def cleanup_partials(self, keep: Iterable[str] | None = None, *, older_than: float | None = None) -> None:
        """Remove stale partial files, then the partial directory when nothing is left in it.

        With ``keep`` (the paths of the finished plan), a ``.part``/``.journal`` pair that belongs
        to none of them (left by a run with other --include/--exclude filters, or a file gone from
        the source) is removed. Pairs touched at or after ``older_than`` (epoch seconds: this run's
        start) are left alone, so a concurrent run's partials in flight are never pulled away.
        """
        partial_dir = self.root / PARTIAL_DIR
        if keep is not None:
            wanted = {partial_stem(path) for path in keep}
            groups: dict[str, list[Path]] = {}
            with contextlib.suppress(OSError):
                for entry in partial_dir.iterdir():
                    if entry.is_file() and entry.suffix in (".part", ".journal"):
                        groups.setdefault(entry.stem, []).append(entry)
            for stem, entries in groups.items():
                if stem in wanted or (older_than is not None and _newest_mtime(entries) >= older_than):
                    continue
                log.info("removing stale partial download %s", _journal_path_name(entries) or stem)
                for entry in entries:
                    with contextlib.suppress(OSError):
                        entry.unlink()
        with contextlib.suppress(OSError):
            partial_dir.rmdir()


def _newest_mtime(entries: list[Path]) -> float:
    newest = 0.0
    for entry in entries:
        with contextlib.suppress(OSError):
            newest = max(newest, entry.stat().st_mtime)
    return newest


def _journal_path_name(entries: list[Path]) -> str | None:
    """The path named in a journal's header line (for the log), None when unreadable."""
    for entry in entries:
        if entry.suffix == ".journal":
            with contextlib.suppress(OSError, ValueError, TypeError), open(entry) as fh:
                name = json.loads(fh.readline()).get("path")
                return str(name) if name else None
    return None
