"""Directory descriptors below one target root, opened once per run instead of once per file.

Writing a file under a target walks its directories one ``openat(O_NOFOLLOW)`` at a time
(:mod:`modelferry.storage.nofollow`) and makes the final rename durable with an ``fsync`` of the
directory. For a tree of many small files that walk and that ``fsync`` cost more system calls than the
file's own bytes, and every system call hands Python's global lock to another thread. So the store
keeps the descriptors of the directories it writes into for the rest of the run, and the directory
``fsync``s of renames are deferred to the end of that scope (:meth:`DirHandles.keeping`): the engine's
run, which ends before the manifest is written (the manifest is what says a copy is complete).

A kept descriptor pins the directory it was opened on: a link planted at that name later is never
followed, as before. At most ``limit`` directories are kept; beyond that, a directory is opened and
its renames synced per file, as without this cache.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from modelferry.storage.nofollow import fsync_dir, open_dir, open_root

KEPT_DIRS = 1024  # descriptors kept per store (each costs one file descriptor)
_RANDOM_BATCH = 4096  # bytes of the kernel's randomness fetched per getrandom call


class DirHandles:
    """Directory descriptors of one target root, kept while :meth:`keeping` is active (thread-safe).

    Outside :meth:`keeping`, every :meth:`opened` walks from the root and closes what it opened, and
    :meth:`renamed_into` syncs the directory at once: nothing is held between calls.
    """

    def __init__(self, root: Path, *, limit: int = KEPT_DIRS) -> None:
        self.root_path = root
        self.limit = limit
        self._lock = threading.Lock()
        self._active = 0  # nested keeping() scopes
        self._dirs: dict[tuple[str, ...], int] = {}  # () is the root
        self._kept: set[int] = set()  # the descriptors in _dirs
        self._dirty: set[int] = set()

    @contextlib.contextmanager
    def keeping(self) -> Iterator[None]:
        """Keep descriptors and defer directory syncs until the outermost scope ends (then :meth:`settle`)."""
        with self._lock:
            self._active += 1
        try:
            yield
        except BaseException:
            if self._leave():
                with contextlib.suppress(OSError):  # the error on the way out says more
                    self.settle()
            raise
        if self._leave():
            self.settle()

    def _leave(self) -> bool:
        """Leave one :meth:`keeping` scope; True when it was the outermost."""
        with self._lock:
            self._active -= 1
            return self._active == 0

    @contextlib.contextmanager
    def opened(self, parts: tuple[str, ...], *, describe: str) -> Iterator[int]:
        """A descriptor of the directory ``parts`` below the root (created when missing, never through a link).

        Raises OSError, or :class:`~modelferry.errors.UnsafePathError` for a link on the way.
        """
        with self._lock:
            fd = self._dirs.get(parts, -1) if self._active else -1
        if fd >= 0:
            yield fd
            return
        fd = self._open(parts, describe)
        with self._lock:
            kept = self._dirs.get(parts, -1)
            if kept < 0 and self._active and len(self._dirs) < self.limit:
                self._dirs[parts] = kept = fd
                self._kept.add(fd)
                fd = -1
        if kept >= 0:  # ours, or another thread's opened meanwhile
            if fd >= 0:
                os.close(fd)
            yield kept
            return
        try:
            yield fd
        finally:
            os.close(fd)

    def _open(self, parts: tuple[str, ...], describe: str) -> int:
        if parts:
            with self.opened((), describe=describe) as root:
                return open_dir(root, parts, create=True, describe=describe)
        return open_root(self.root_path, create=True)

    def renamed_into(self, dir_fd: int) -> None:
        """A rename landed in ``dir_fd``: sync it now, or when :meth:`keeping` ends if the descriptor is kept."""
        with self._lock:
            kept = dir_fd in self._kept
            if kept:
                self._dirty.add(dir_fd)
        if not kept:
            fsync_dir(dir_fd)

    def settle(self) -> None:
        """Sync every kept directory a rename landed in, then close every kept descriptor. Raises OSError.

        Every descriptor is closed even when a sync fails; the first failure is raised.
        """
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            fds, self._kept = self._kept, set()
            self._dirs = {}
        failure: OSError | None = None
        for fd in fds:
            if fd in dirty:
                try:
                    fsync_dir(fd)
                except OSError as exc:
                    failure = failure or exc
            with contextlib.suppress(OSError):
                os.close(fd)
        if failure is not None:
            raise failure


class RandomSuffixes:
    """Unpredictable hex suffixes for partial-file names, one ``getrandom`` call per few hundred names."""

    def __init__(self, nbytes: int = 8) -> None:
        self.nbytes = nbytes
        self._lock = threading.Lock()
        self._pool = b""
        self._used = 0

    def next(self) -> str:
        with self._lock:
            if self._used + self.nbytes > len(self._pool):
                self._pool, self._used = os.urandom(_RANDOM_BATCH), 0
            pool, start = self._pool, self._used
            self._used += self.nbytes
        return pool[start : start + self.nbytes].hex()
