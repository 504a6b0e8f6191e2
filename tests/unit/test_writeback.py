"""Disk hints: early write-back never fails a copy; reserving blocks fails one only for a full volume."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
from collections.abc import Callable
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


def test_reserve_gives_a_file_its_blocks_and_keeps_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"head", 0)
        os.ftruncate(fd, 8 << 20)
        sparse = os.fstat(fd).st_blocks * 512
        if not writeback.reserve(fd, 8 << 20):
            pytest.skip("this filesystem cannot reserve blocks (fallocate)")
        assert sparse < (8 << 20) <= os.fstat(fd).st_blocks * 512
        assert os.fstat(fd).st_size == 8 << 20
    finally:
        os.close(fd)
    assert path.read_bytes()[:4] == b"head"


def test_reserve_on_something_that_cannot_is_no_error() -> None:
    read_end, write_end = os.pipe()
    try:
        assert writeback.reserve(write_end, 4096) is False
    finally:
        os.close(read_end)
        os.close(write_end)


def failing_fallocate(*codes: int) -> Callable[[int, int, int, int], int]:
    """A stand-in for libc's fallocate that fails with ``codes`` in turn, then succeeds."""
    pending = list(codes)

    def call(fd: int, mode: int, offset: int, length: int) -> int:
        if pending:
            ctypes.set_errno(pending.pop(0))
            return -1
        return 0

    return call


def test_reserve_raises_a_full_volume_and_retries_an_interrupted_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writeback, "_fallocate", failing_fallocate(errno.ENOSPC))
    with pytest.raises(OSError) as raised:
        writeback.reserve(3, 4096)
    assert raised.value.errno == errno.ENOSPC
    monkeypatch.setattr(writeback, "_fallocate", failing_fallocate(errno.EINTR, errno.EINTR))
    assert writeback.reserve(3, 4096) is True
