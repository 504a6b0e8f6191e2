"""Bounded SIGTERM drain: reads blocked on a silent server are woken at once, not after the stall timeout."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelferry.errors import RetryableError
from modelferry.storage.base import FileSink
from modelferry.storage.http import RangedHTTPClient
from modelferry.storage.socket_body import CAN_SPLICE
from tests.integration.test_sync_lifecycle import big_model, journaled_parts
from tests.servers.blocked import blocked_in_io, threads_blocked_in_io
from tests.servers.hfhub import HubRepo
from tests.servers.lifecycle import StallingHub, spawn, terminate, wait_for

MiB = 1 << 20
MANIFEST = Path(".modelferry") / "manifest.json"


@pytest.fixture
def hub() -> Iterator[StallingHub]:
    server = StallingHub()
    with server:
        yield server


def read_in_thread(
    client: RangedHTTPClient, url: str, length: int, sink: FileSink | None = None
) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in client.get_range(url, 0, length) if sink is None else client.get_range_into(url, 0, length, sink):
                pass
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, errors


# 1 MiB goes through urllib3's reader; 4 MiB through socket_body's recv(MSG_WAITALL) path, or, with
# a file sink, through splice(2).
@pytest.mark.parametrize(("length", "splice"), [(1 * MiB, False), (4 * MiB, False), (4 * MiB, True)])
def test_interrupt_wakes_a_read_blocked_on_a_silent_server(
    hub: StallingHub, tmp_path: Path, length: int, splice: bool
) -> None:
    if splice and not CAN_SPLICE:
        pytest.skip("os.splice needs Linux")
    hub.add(HubRepo("org/m", {"model.safetensors": bytes(range(256)) * (length // 256)}))
    hub.stall_after, hub.stall_count = 64 * 1024, 1
    client = RangedHTTPClient(connect_timeout=5, stall_timeout=60)
    url = f"{hub.url}/org/m/resolve/main/model.safetensors"
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    sink = FileSink(fd, 0, lambda exc: exc) if splice else None
    thread, errors = read_in_thread(client, url, length, sink)
    assert wait_for(lambda: hub.stalled >= 1), "the server never went silent"
    # the reader is asleep in its read (the wake-up must work on a blocked read, not on one about to start)
    assert wait_for(lambda: thread.native_id is not None and blocked_in_io("self", thread.native_id))
    client.interrupt()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the read was not woken by interrupt()"
    assert len(errors) == 1 and isinstance(errors[0], RetryableError), errors
    # Interrupted for good: a later read fails at once instead of starting a new download.
    thread, errors = read_in_thread(client, url, length)
    thread.join(timeout=10)
    assert not thread.is_alive() and errors and isinstance(errors[0], RetryableError)
    client.close()
    os.close(fd)


def test_interrupt_without_reads_is_harmless(hub: StallingHub) -> None:
    hub.add(HubRepo("org/m", {"a.bin": b"x" * 1000}))
    client = RangedHTTPClient(connect_timeout=5, stall_timeout=60)
    url = f"{hub.url}/org/m/resolve/main/a.bin"
    assert b"".join(client.get_range(url, 0, 1000)) == b"x" * 1000  # a pooled, idle connection stays untouched
    client.interrupt()
    client.close()


def test_sigterm_with_reads_stuck_on_a_silent_server_exits_1_quickly(hub: StallingHub, tmp_path: Path) -> None:
    # The scenario steers a child process through timing windows; on a 2-core CI box under the whole
    # suite it once missed a window (seen 1 in 5 full runs, never alone). A second fresh attempt keeps
    # the check meaningful: a broken drain fails both.
    try:
        _sigterm_scenario(hub, tmp_path / "a")
    except AssertionError:
        hub.stall_after, hub.stall_count, hub.stalled = 0, 0, 0
        _sigterm_scenario(hub, tmp_path / "b")


def _sigterm_scenario(hub: StallingHub, tmp_path: Path) -> None:
    tmp_path.mkdir()
    files = big_model()
    hub.add(HubRepo("org/big", files))
    hub.faults.slow_delay = 0.05  # ~0.8 s per 1 MiB part: some parts finish first
    out = tmp_path / "out"
    proc = spawn(
        tmp_path, "sync", "hf://org/big", str(out), "--hf-endpoint", hub.url, "--part-size", "1MiB",
        "--concurrency", "2", "--json", "--termination-log", str(tmp_path / "term"),
        env={"MODELFERRY_TRANSFER__STALL_TIMEOUT": "60"},
    )  # fmt: skip
    try:
        assert wait_for(lambda: len(journaled_parts(out)) >= 2, proc), "no part was journaled"
        # From now on every GET of the weight sends a little and then goes silent, connection open.
        hub.stall_after, hub.stall_count = 64 * 1024, 1000
        hub.faults.slow_delay = 0.0
        assert wait_for(lambda: hub.stalled >= 2, proc), "the workers never hit the silent server"
        assert proc.poll() is None, "the copy ended before it could be signalled"
        # both workers are now asleep in a read with a 60 s stall timeout (not about to start one)
        assert wait_for(lambda: threads_blocked_in_io(proc.pid) >= 2, proc), "the workers never blocked in a read"
        code, drained_in = terminate(proc, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (tmp_path / "stderr").read_text()
    assert code == 1, err
    # The silent server holds a read for 20 s and the stall timeout is 60 s: only the interrupt is this quick.
    assert drained_in < 10, f"took {drained_in:.1f}s to drain"
    assert json.loads((tmp_path / "term").read_text())["reason"] == "Cancelled"
    assert not (out / MANIFEST).exists()
    partial = out / ".modelferry" / "partial"
    assert list(partial.glob("*.part")) and list(partial.glob("*.journal"))
    assert len(journaled_parts(out)) >= 2  # finished parts survive for the resume
