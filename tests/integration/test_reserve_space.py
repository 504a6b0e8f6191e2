"""A file written in parts gets its blocks first: a volume too small fails the copy before a byte is fetched."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from modelferry.errors import AccessDeniedError, InsufficientSpaceError, RetryableError
from modelferry.settings import TransferSettings
from modelferry.storage import writeback
from modelferry.storage.base import ObjectInfo
from modelferry.storage.local import LocalStore
from modelferry.transfer.plan import SyncOptions
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri

MiB = 1 << 20


class CountingSource(LocalStore):
    """Counts the copy's reads; at the first, notes the blocks the target's partial files hold already."""

    def __init__(self, root: Path, out: Path | None = None) -> None:
        super().__init__(parse_uri(str(root)), root)
        self.out = out
        self.reads: list[str] = []
        self.held_at_first_read: int | None = None
        self.lock = threading.Lock()

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        if threading.current_thread().name.startswith("transfer-"):  # the copy, not the hashing of the source
            with self.lock:
                self.reads.append(path)
                if self.held_at_first_read is None and self.out is not None:
                    partials = (self.out / ".modelferry" / "partial").glob("*.part")
                    self.held_at_first_read = sum(p.stat().st_blocks * 512 for p in partials)
        return super().read(path, start, length, info=info)


def tree(tmp_path: Path) -> CountingSource:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"w" * (3 * MiB))
    return CountingSource(src, tmp_path / "out")


def refusing_fallocate(code: int) -> Callable[[int, int, int, int], int]:
    """libc's fallocate answering ``code`` (the kernel's answer, injected)."""

    def call(fd: int, mode: int, offset: int, length: int) -> int:
        ctypes.set_errno(code)
        return -1

    return call


@pytest.mark.parametrize(
    ("code", "error", "keeps_partial"),
    [
        (errno.ENOSPC, InsufficientSpaceError, False),
        (errno.EDQUOT, InsufficientSpaceError, False),
        (errno.EPERM, AccessDeniedError, False),
        (errno.EIO, RetryableError, True),  # a retry (this run's or the next) resumes the file
    ],
)
def test_a_file_that_cannot_get_its_blocks_fails_before_any_part_is_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, error: type[Exception], keeps_partial: bool
) -> None:
    monkeypatch.setattr(writeback, "_fallocate", refusing_fallocate(code))
    source = tree(tmp_path)
    out = tmp_path / "out"
    target = LocalStore(parse_uri(str(out)), out)
    with pytest.raises(error) as raised:
        sync(source, target, TransferSettings(part_size=MiB, concurrency=2, retries=0), SyncOptions())
    assert "model.safetensors" in str(raised.value)
    assert source.reads == []
    assert bool(list(out.rglob("*.journal"))) is keeps_partial
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
    probe = tmp_path / "probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        supported = writeback.reserve(fd, MiB)
    finally:
        os.close(fd)
    if supported:  # the whole file held its blocks before its first part arrived
        assert source.held_at_first_read is not None and source.held_at_first_read >= 3 * MiB


class FailingSource(LocalStore):
    """Fails the copy's reads from ``fail_from`` on (a dropped connection): the first attempt keeps its partial."""

    def __init__(self, root: Path, fail_from: int) -> None:
        super().__init__(parse_uri(str(root)), root)
        self.fail_from = fail_from

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        if start >= self.fail_from and threading.current_thread().name.startswith("transfer-"):
            raise RetryableError("connection reset", obj=path)
        return super().read(path, start, length, info=info)


def test_an_interrupted_copys_reserved_blocks_count_as_free_when_it_resumes(tmp_path: Path) -> None:
    """The partial holds blocks for the whole file: the next attempt's space check must not count them twice."""
    src = tmp_path / "src"
    src.mkdir()
    size = 64 * MiB
    (src / "model.safetensors").write_bytes(os.urandom(size))
    out = tmp_path / "out"
    target = LocalStore(parse_uri(str(out)), out)
    first = TransferSettings(part_size=8 * MiB, concurrency=1, retries=0, free_space_margin=0)
    with pytest.raises(RetryableError):
        sync(FailingSource(src, fail_from=16 * MiB), target, first, SyncOptions())
    held = target.resumable_bytes()
    if held < size:
        pytest.skip("this filesystem does not reserve blocks (fallocate)")
    # A margin that leaves room for the rest of the file only if the partial's blocks count as free.
    volume_free = shutil.disk_usage(out).free
    margin = volume_free - size // 2
    resumed = TransferSettings(part_size=8 * MiB, concurrency=1, free_space_margin=max(0, margin))
    result = sync(LocalStore(parse_uri(str(src)), src), target, resumed, SyncOptions())
    assert result.files_copied == 1
    assert (out / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    assert target.resumable_bytes() == 0


def test_only_partials_a_copy_resumes_count(tmp_path: Path) -> None:
    partial = tmp_path / ".modelferry" / "partial"
    partial.mkdir(parents=True)
    stem = "a" * 24
    (partial / f"{stem}-{'0' * 16}.part").write_bytes(b"p" * (1 * MiB))
    (partial / f"{stem}.journal").write_text("{}\n")
    (partial / f"{'b' * 24}-{'1' * 16}.part").write_bytes(b"q" * (1 * MiB))  # no journal: a one-part leftover, swept
    store = LocalStore(parse_uri(str(tmp_path)), tmp_path)
    assert store.resumable_bytes() == os.stat(partial / f"{stem}-{'0' * 16}.part").st_blocks * 512 >= MiB
    assert LocalStore(parse_uri(str(tmp_path / "none")), tmp_path / "none").resumable_bytes() == 0


def test_the_agent_resumes_a_download_whose_partial_holds_its_blocks_under_the_watermark(tmp_path: Path) -> None:
    """The agent's high-watermark check counts the interrupted attempt's reserved blocks once, not twice."""
    from modelferry.controller.agent.disk import disk_usage
    from modelferry.controller.agent.gopher import Gopher
    from modelferry.controller.agent.metrics import AgentMetrics
    from modelferry.controller.agent.tasks import ModelRef, Task, TaskQueue, TaskType
    from tests.integration.test_agent_gopher import Sink, basemodel, settings_for

    src = tmp_path / "bucket" / "model"
    src.mkdir(parents=True)
    size = 64 * MiB
    (src / "model.safetensors").write_bytes(os.urandom(size))
    root = tmp_path / "models"
    root.mkdir()
    obj = basemodel(f"file://{src}")
    task = Task(TaskType.DOWNLOAD, ModelRef.of(obj), obj)
    settings = settings_for(root, download_retries=0)
    settings.transfer.part_size = 8 * MiB
    settings.transfer.concurrency = 1
    settings.transfer.retries = 0
    sink = Sink()
    failing = Gopher(
        settings, TaskQueue(), sink, AgentMetrics(), store_opener=lambda u, _c: FailingSource(src, 16 * MiB)
    )
    failing.run(task)
    assert sink.statuses() == ["Updating", "Failed"]  # retryable: the staging directory and its partial stay
    staging = root / "team" / "minilm.modelferry-new"
    held = LocalStore(parse_uri(str(staging)), staging).resumable_bytes()
    if held < size:
        pytest.skip("this filesystem does not reserve blocks (fallocate)")
    usage = disk_usage(root)
    settings.agent.high_watermark = (usage.used + size // 2) / usage.total  # room for half the file, no more
    Gopher(settings, TaskQueue(), sink, AgentMetrics()).run(task)
    assert sink.statuses()[-1] == "Ready", sink.entries[-1]
    assert (root / "team" / "minilm" / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
