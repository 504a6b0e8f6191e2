"""Cancellation wakes every read blocked on its source, also when a worker noticed the cancellation first."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from modelferry.retry import Cancelled
from modelferry.settings import TransferSettings
from modelferry.storage.base import ObjectInfo
from modelferry.storage.local import LocalStore
from modelferry.transfer.plan import SyncOptions
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri

WAIT = 30  # seconds a step may take before the test fails (never reached when it passes)


class TwoReads(LocalStore):
    """``flowing.bin`` sends one chunk, then another as soon as the run is cancelled (its worker sees the
    cancellation between chunks); ``silent.bin`` sends one chunk and then nothing until ``interrupt()``."""

    def __init__(self, root: Path, cancel: threading.Event) -> None:
        super().__init__(parse_uri(str(root)), root)
        self.cancel = cancel
        self.started = {"flowing.bin": threading.Event(), "silent.bin": threading.Event()}
        self.interrupted = threading.Event()

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        chunks = iter(super().read(path, start, length, info=info))
        yield next(chunks)
        if path in self.started and threading.current_thread().name.startswith("transfer-"):
            self.started[path].set()
            woken = self.cancel if path == "flowing.bin" else self.interrupted
            assert woken.wait(WAIT), f"{path}: never woken"
        yield from chunks

    def interrupt(self) -> None:
        self.interrupted.set()


def test_a_read_blocked_on_a_silent_source_is_interrupted_though_another_worker_failed_first(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("flowing.bin", "silent.bin"):
        (src / name).write_bytes(b"x" * (8 << 20))
    cancel = threading.Event()
    source = TwoReads(src, cancel)
    target = LocalStore(parse_uri(str(tmp_path / "out")), tmp_path / "out")
    settings = TransferSettings(concurrency=2, retries=0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            sync(source, target, settings, SyncOptions(), cancel=cancel)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for started in source.started.values():
        assert started.wait(WAIT)
    cancel.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert source.interrupted.is_set(), "the silent read was left to its stall timeout"
    assert len(errors) == 1 and isinstance(errors[0], Cancelled), errors
