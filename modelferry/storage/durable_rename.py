"""Publishing a finished temp file under its final name so it survives a crash.

The rename is atomic, but only an fsync of the parent directory makes the new
directory entry durable; without it a power loss can leave the old name (or none).
"""

from __future__ import annotations

import os
from pathlib import Path


def replace_durably(temp: Path, final: Path) -> None:
    """Atomically rename ``temp`` to ``final`` and fsync ``final``'s directory. Raises OSError.

    The caller fsyncs and closes the file itself first (it holds the descriptor).
    """
    os.replace(temp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
