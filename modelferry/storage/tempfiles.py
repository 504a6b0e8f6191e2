"""Temporary files: one naming scheme, locked while in use, swept by the next run, never synced.

Every command that writes a file beside its final name (``enigma --in-place``,
the manifest of a sync) writes ``.<name>.<tool>-<pid>-<random>.tmp`` first and
renames it over the final name when it is complete. While the writer lives it
holds an ``flock`` on the file; a process killed with SIGKILL loses its lock
with its descriptors. The next run therefore removes every temp file it can
lock (its owner is gone) and leaves the ones it cannot (a concurrent run is
still writing them). ``flock`` is per open file on one kernel, so runs in other
containers on the same node are respected too; the pid in the name is only a
hint for people.

:func:`is_temp_name` is the one predicate the planner and enigma use so that a
leftover is never copied.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import stat

log = logging.getLogger(__name__)

TOOLS = ("enigma", "modelferry")
_TEMP_RE = re.compile(r"^\..+\.(?:" + "|".join(TOOLS) + r")-\d+-[0-9a-f]{8}\.tmp$")
_NAME_BUDGET = 255 - 40  # NAME_MAX minus the decoration, so a long final name still gets a legal temp name


def temp_name(final_name: str, tool: str) -> str:
    """``.<final_name>.<tool>-<pid>-<8 hex>.tmp``; the visible part is cut to fit NAME_MAX."""
    shown = final_name.encode()[:_NAME_BUDGET].decode(errors="ignore")
    return f".{shown}.{tool}-{os.getpid()}-{os.urandom(4).hex()}.tmp"


def is_temp_name(name: str) -> bool:
    """True for a temp file of any modelferry command (the last path component)."""
    return bool(_TEMP_RE.match(name))


def is_temp_path(path: str) -> bool:
    """True when the last component of a ``/``-separated path is a temp file name."""
    return is_temp_name(path.rsplit("/", 1)[-1])


def hold(fd: int) -> None:
    """Mark the temp file open on ``fd`` as in use until the descriptor is closed."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def sweep(dir_fd: int, describe: str) -> list[str]:
    """Remove the abandoned temp files directly in ``dir_fd`` (links are never followed); their names."""
    removed: list[str] = []
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return removed
    for name in names:
        if not is_temp_name(name):
            continue
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link with a temp name: not ours, and removing it is harmless
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=dir_fd)
                    removed.append(name)
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
                removed.append(name)
        finally:
            os.close(fd)
    for name in removed:
        log.info("removed %s/%s left by an interrupted run", describe, name)
    if removed:
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
    return removed


def sweep_tree(root_fd: int, describe: str) -> list[str]:
    """:func:`sweep` in ``root_fd`` and every directory below it (not through links); relative paths."""
    removed = [name for name in sweep(root_fd, describe)]
    try:
        entries = list(os.scandir(root_fd))
    except OSError:
        return removed
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        try:
            sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
        except OSError:
            continue
        try:
            removed += [f"{entry.name}/{n}" for n in sweep_tree(sub, f"{describe}/{entry.name}")]
        finally:
            os.close(sub)
    return removed
