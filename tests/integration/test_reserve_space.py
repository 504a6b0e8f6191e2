"""A file written in parts gets its blocks first: a volume too small fails the copy before a byte is fetched."""

from __future__ import annotations

import ctypes
import errno
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest

from modelferry.errors import InsufficientSpaceError
from modelferry.settings import TransferSettings
from modelferry.storage import writeback
from modelferry.storage.base import ObjectInfo
from modelferry.storage.local import LocalStore
from modelferry.transfer.plan import SyncOptions
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri

MiB = 1 << 20


class CountingSource(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(parse_uri(str(root)), root)
        self.reads: list[str] = []
        self.lock = threading.Lock()

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        if threading.current_thread().name.startswith("transfer-"):  # the copy, not the hashing of the source
            with self.lock:
                self.reads.append(path)
        return super().read(path, start, length, info=info)


def tree(tmp_path: Path) -> CountingSource:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"w" * (3 * MiB))
    return CountingSource(src)


def full_volume(fd: int, mode: int, offset: int, length: int) -> int:
    ctypes.set_errno(errno.ENOSPC)
    return -1


def test_a_full_volume_fails_the_copy_before_any_part_is_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writeback, "_fallocate", full_volume)  # the kernel's answer, injected
    source = tree(tmp_path)
    out = tmp_path / "out"
    target = LocalStore(parse_uri(str(out)), out)
    with pytest.raises(InsufficientSpaceError) as raised:
        sync(source, target, TransferSettings(part_size=MiB, concurrency=2, retries=0), SyncOptions())
    assert "model.safetensors" in str(raised.value)
    assert source.reads == []
    assert not list(out.rglob("*.part")) and not list(out.rglob("*.journal"))  # a permanent error keeps nothing
    assert not (out / "model.safetensors").exists()


def test_a_copy_in_parts_lands_whole_with_its_blocks_reserved(tmp_path: Path) -> None:
    source = tree(tmp_path)
    out = tmp_path / "out"
    result = sync(
        source, LocalStore(parse_uri(str(out)), out), TransferSettings(part_size=MiB, concurrency=2), SyncOptions()
    )
    assert result.files_copied == 1
    assert (out / "model.safetensors").read_bytes() == b"w" * (3 * MiB)
    assert len(source.reads) == 3
