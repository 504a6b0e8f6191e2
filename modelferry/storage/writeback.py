"""Start writing finished parts to disk early, so the final ``fsync`` has little left to do.

Without it the kernel keeps a whole multi-GiB file dirty in the page cache until
the ``fsync`` before the rename, and the copy ends with seconds of pure disk
wait (measured: about a quarter of a 2 GiB download on the development VM).
``sync_file_range(SYNC_FILE_RANGE_WRITE)`` queues the pages of one finished part
for write-out without waiting for it, the way PostgreSQL's ``*_flush_after``
settings do. It is a hint: durability still comes from the ``fsync`` before the
rename. Where the call does not exist (not Linux) nothing happens.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)

SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start write-out of dirty pages in the range, do not wait


def _load() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The interpreter's own symbols include libc's; find_library would run `ldconfig -p` at import.
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_sync_file_range = _load()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Queue bytes ``[offset, offset + length)`` of ``fd`` for write-out; never blocks on the disk, never fails."""
    if _sync_file_range is None or length <= 0:
        return
    if _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE) != 0:
        # A filesystem without support (some FUSE mounts) says so once per part: harmless, fsync still runs.
        log.debug("sync_file_range failed with errno %d; relying on fsync", ctypes.get_errno())
