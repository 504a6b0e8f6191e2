"""Early write-back is a hint: it queues pages where it can and never fails a copy where it cannot."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from modelferry.storage import writeback


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux-only")
def test_sync_file_range_is_found_without_a_subprocess() -> None:
    assert writeback._sync_file_range is not None


def test_write_back_of_a_file_and_of_something_that_is_no_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 65536)
    fd = os.open(path, os.O_RDWR)
    try:
        writeback.start_writeback(fd, 0, 65536)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 65536
    read_end, write_end = os.pipe()  # sync_file_range refuses pipes (ESPIPE): logged, not raised
    try:
        with caplog.at_level(logging.DEBUG, logger=writeback.__name__):
            writeback.start_writeback(write_end, 0, 4096)
    finally:
        os.close(read_end)
        os.close(write_end)
    if writeback._sync_file_range is not None:
        assert any("relying on fsync" in r.getMessage() for r in caplog.records)
