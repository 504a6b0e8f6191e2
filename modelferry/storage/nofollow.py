"""Writing under a directory without ever following a symbolic link.

A target directory may hold links planted by someone else (a shared volume, a
tenant's earlier sync): ``target/sub -> ../outside`` or a link at a temp-file
name. Every write below a target root therefore walks from the root one
component at a time with ``openat(..., O_NOFOLLOW)`` (``os.open`` with
``dir_fd``) and creates files with ``O_CREAT | O_EXCL | O_NOFOLLOW``. A path
component that is a link is refused with :class:`UnsafePathError` (exit 3)
instead of being followed. The root itself is the operator's choice and may be
reached through links.

The walk costs one ``openat`` per directory level per file opened; nothing is
added per chunk of data.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from modelferry.errors import UnsafePathError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def refuse_link(dir_fd: int, name: str, describe: str) -> UnsafePathError | None:
    """The error for a link at ``name`` in ``dir_fd`` (None when ``name`` is not a link)."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except OSError:
        return None
    if not stat.S_ISLNK(st.st_mode):
        return None
    return UnsafePathError(
        f"refusing to write through the symbolic link {name!r} in {describe}",
        obj=describe,
        hint="Something planted a link in the target; remove it (modelferry never follows links when writing)",
    )


def open_root(root: Path, *, create: bool) -> int:
    """A descriptor of the target root (created with its parents when ``create``). Raises OSError."""
    try:  # the usual case first: the root exists (no mkdir failing with EEXIST for every file)
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if not create:
            raise
    root.mkdir(parents=True, exist_ok=True)
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


@contextlib.contextmanager
def opened_root(root: Path, *, create: bool) -> Iterator[int]:
    """:func:`open_root` as a context manager."""
    fd = open_root(root, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def open_dir(dir_fd: int, parts: list[str] | tuple[str, ...], *, create: bool, describe: str) -> int:
    """Walk ``parts`` below ``dir_fd`` without following links; a new descriptor of the last directory.

    Raises :class:`UnsafePathError` for a link on the way, OSError otherwise. ``dir_fd`` stays open.
    """
    fd = os.dup(dir_fd)
    try:
        for name in parts:
            try:
                try:  # the usual case first: the directory exists (no mkdir failing with EEXIST)
                    nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=fd)
                    nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP) and (err := refuse_link(fd, name, describe)):
                    raise err from exc
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def opened_dir(dir_fd: int, parts: list[str] | tuple[str, ...], *, create: bool, describe: str) -> Iterator[int]:
    """:func:`open_dir` as a context manager."""
    fd = open_dir(dir_fd, parts, create=create, describe=describe)
    try:
        yield fd
    finally:
        os.close(fd)


def create_file(dir_fd: int, name: str, describe: str, mode: int = 0o644) -> int:
    """A new file ``name`` in ``dir_fd`` opened read-write; never an existing file, never through a link."""
    try:
        return os.open(name, os.O_RDWR | NEW_FILE_FLAGS, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ELOOP) and (err := refuse_link(dir_fd, name, describe)):
            raise err from exc
        raise


def open_file(dir_fd: int, name: str, flags: int, describe: str) -> int:
    """An existing file ``name`` in ``dir_fd``, refusing a link."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP and (err := refuse_link(dir_fd, name, describe)):
            raise err from exc
        raise


def fsync_dir(dir_fd: int) -> None:
    """Make renames and removals in this directory durable."""
    os.fsync(dir_fd)


def rename_durably(source_dir: int, source: str, target_dir: int, target: str) -> None:
    """Rename (replacing ``target``; a link there is replaced, not followed) and fsync the new name's directory.

    Only the destination directory is synced, as :func:`~modelferry.storage.durable_rename.replace_durably`
    does: the new entry is what must survive; a temp name that reappears after a crash is swept.
    """
    os.replace(source, target, src_dir_fd=source_dir, dst_dir_fd=target_dir)
    fsync_dir(target_dir)


def split_rel(path: str) -> tuple[list[str], str]:
    """``a/b/c`` -> (["a", "b"], "c")."""
    parts = path.split("/")
    return parts[:-1], parts[-1]
