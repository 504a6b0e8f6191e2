"""Where enigma reads from and writes to: local files or any :class:`~modelferry.storage.base.Store`.

Writes are atomic: a local output is a temporary file beside the final name
(mode 0600 while it is being written), fsynced and renamed into place only after
every chunk was sealed or authenticated; a store output is an
:class:`~modelferry.storage.base.Upload` that becomes visible on ``complete``.
On any failure the temporary data is removed, so no plaintext is left behind.
"""

from __future__ import annotations

import abc
import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from modelferry.errors import ModelferryError, RetryableError
from modelferry.storage.base import ObjectInfo, PartWriter, Store, Upload
from modelferry.storage.local import translate_os_error
from modelferry.storage.nofollow import create_file, open_root, rename_durably
from modelferry.storage.tempfiles import hold, temp_name

READ_PIECE = 4 << 20
STORE_PART = 16 << 20


def safe_mode(mode: int) -> int:
    """Permission bits to give an output: the input's, never world-writable, no set-id bits."""
    return stat.S_IMODE(mode) & 0o775 & ~(stat.S_ISUID | stat.S_ISGID)


class Source(abc.ABC):
    """Bytes to read: a size, ranged reads, a name for messages, a file mode when local."""

    size: int
    describe: str
    mode: int | None = None

    @abc.abstractmethod
    def read(self, offset: int, length: int, piece: int = READ_PIECE) -> Iterator[bytes]:
        """``length`` bytes from ``offset``, in pieces of at most ``piece`` bytes."""

    @contextlib.contextmanager
    def open_fill(self, offset: int, length: int) -> Iterator[Callable[[memoryview], int]]:
        """A function that fills a buffer with the next bytes of ``[offset, offset+length)``."""
        pieces = iter(self.read(offset, length))
        leftover = memoryview(b"")

        def fill(buf: memoryview) -> int:
            nonlocal leftover
            pos = 0
            while pos < len(buf):
                if not leftover:
                    try:
                        leftover = memoryview(next(pieces))
                    except StopIteration:
                        break
                take = min(len(leftover), len(buf) - pos)
                buf[pos : pos + take] = leftover[:take]
                leftover = leftover[take:]
                pos += take
            return pos

        try:
            yield fill
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()

    def read_exact(self, offset: int, length: int) -> bytes:
        data = b"".join(self.read(offset, length))
        if len(data) != length:
            raise RetryableError(f"short read: {len(data)} of {length} bytes at {offset}", obj=self.describe)
        return data


class LocalSource(Source):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.describe = str(path)
        try:
            st = path.stat()
        except OSError as exc:
            raise translate_os_error(exc, str(path)) from exc
        if not stat.S_ISREG(st.st_mode):
            raise ModelferryError(f"{path} is not a regular file", obj=str(path))
        self.size = st.st_size
        self.mode = st.st_mode

    def read(self, offset: int, length: int, piece: int = READ_PIECE) -> Iterator[bytes]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise translate_os_error(exc, self.describe) from exc
        try:
            end = offset + length
            while offset < end:
                data = os.pread(fd, min(piece, end - offset), offset)
                if not data:
                    return
                offset += len(data)
                yield data
        except OSError as exc:
            raise translate_os_error(exc, self.describe) from exc
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def open_fill(self, offset: int, length: int) -> Iterator[Callable[[memoryview], int]]:
        """``preadv`` straight into the caller's buffer: no intermediate copy."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise translate_os_error(exc, self.describe) from exc
        pos, end = offset, offset + length

        def fill(buf: memoryview) -> int:
            nonlocal pos
            done = 0
            while done < len(buf) and pos < end:
                try:
                    got = os.preadv(fd, [buf[done : done + min(len(buf) - done, end - pos)]], pos)
                except OSError as exc:
                    raise translate_os_error(exc, self.describe) from exc
                if got == 0:
                    break
                done += got
                pos += got
            return done

        try:
            yield fill
        finally:
            os.close(fd)

    def read_at(self, buf: memoryview, offset: int) -> int:
        """Fill ``buf`` from ``offset`` (thread-safe: one descriptor per call)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                done = 0
                while done < len(buf):
                    got = os.preadv(fd, [buf[done:]], offset + done)
                    if got == 0:
                        break
                    done += got
                return done
            finally:
                os.close(fd)
        except OSError as exc:
            raise translate_os_error(exc, self.describe) from exc


class StoreSource(Source):
    def __init__(self, store: Store, info: ObjectInfo) -> None:
        self.store = store
        self.info = info
        self.size = info.size
        self.describe = store.describe(info.path)

    def read(self, offset: int, length: int, piece: int = READ_PIECE) -> Iterator[bytes]:
        if length <= 0:
            return iter(())
        return iter(self.store.read(self.info.path, offset, length, info=self.info))


class Sink(abc.ABC):
    """Sequential writes, then :meth:`commit` (atomic publish) or :meth:`abort` (nothing left)."""

    describe: str

    @abc.abstractmethod
    def write(self, data: bytes | memoryview) -> None:
        """Write the next bytes; ``data`` may be a reused buffer, so copy it if it is kept."""

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None: ...


class LocalSink(Sink):
    """A temporary file beside ``final``, renamed over it on commit.

    The temp file (``.<name>.enigma-<pid>-<random>.tmp``) is created with ``O_EXCL |
    O_NOFOLLOW`` in a parent opened without following links, and locked while this
    process lives, so the next run can tell an abandoned one (SIGKILL) from a live one
    (:mod:`modelferry.storage.tempfiles`). It is renamed before its descriptor is
    closed, so the lock covers it until it is gone.
    """

    def __init__(self, final: Path, mode: int = 0o644) -> None:
        self.final = final
        self.describe = str(final)
        self.mode = safe_mode(mode)
        self.temp = final.with_name(temp_name(final.name, "enigma"))
        self._closed = True
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self.dir_fd = open_root(final.parent, create=False)
        except OSError as exc:
            raise translate_os_error(exc, str(final)) from exc
        try:
            self.fd = create_file(self.dir_fd, self.temp.name, self.describe, 0o600)
            hold(self.fd)
        except OSError as exc:
            os.close(self.dir_fd)
            raise translate_os_error(exc, str(final)) from exc
        self._closed = False

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            raise translate_os_error(exc, self.describe) from exc

    def write_at(self, data: memoryview, offset: int) -> None:
        """Positional write (parallel writers); the file is published only by :meth:`commit`."""
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self.fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as exc:
            raise translate_os_error(exc, self.describe) from exc

    def commit(self) -> None:
        try:
            os.fchmod(self.fd, self.mode)
            os.fsync(self.fd)
            rename_durably(self.dir_fd, self.temp.name, self.dir_fd, self.final.name)
        except OSError as exc:
            self.abort()
            raise translate_os_error(exc, self.describe) from exc
        self._close()

    def _close(self) -> None:
        if not self._closed:
            for fd in (self.fd, self.dir_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._closed = True

    def abort(self) -> None:
        if not self._closed:
            with contextlib.suppress(OSError):
                os.unlink(self.temp.name, dir_fd=self.dir_fd)
        self._close()


class StoreSink(Sink):
    """An upload to a store, written part by part in order."""

    def __init__(self, store: Store, path: str, size: int) -> None:
        self.describe = store.describe(path)
        feats = store.features
        part = max(STORE_PART, feats.min_part_size, -(-size // max(1, feats.max_parts)))
        self.upload: Upload = store.open_upload(path, size, part)
        self.size = size
        self.part_size = part
        self._pos = 0
        self._index = 0
        self._writer: PartWriter | None = None
        self._left = 0

    def _next_part(self) -> None:
        length = min(self.part_size, self.size - self._pos)
        self._writer = self.upload.part(self._index, self._pos, length)
        self._left = length
        self._index += 1

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._writer is None:
                self._next_part()
            assert self._writer is not None
            take = min(self._left, len(view))
            self._writer.write(bytes(view[:take]))  # part writers may keep it; our buffer is reused
            self._pos += take
            self._left -= take
            view = view[take:]
            if self._left == 0:
                self._writer.commit()
                self._writer = None

    def commit(self) -> None:
        if self.size == 0 and self._index == 0:
            self._next_part()
        if self._writer is not None:
            self._writer.commit()
            self._writer = None
        self.upload.complete()

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.discard()
        with contextlib.suppress(Exception):
            self.upload.abort(keep_partial=False)
