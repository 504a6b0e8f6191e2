"""Plain-HTTP bodies spliced socket -> pipe -> file for local targets: correct, retried, stall-safe.

The Hub stand-in serves real HTTP over loopback; parts above 1 MiB take the splice path
(smaller bodies are read through http.client's buffer and never spliced).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelferry.errors import PermanentError, StalledError
from modelferry.settings import HFCredentials, MiB
from modelferry.storage import socket_body
from modelferry.storage.base import FileSink, InPlace
from modelferry.storage.hf import HFStore
from modelferry.storage.http import RangedHTTPClient
from modelferry.storage.local import LocalStore
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri
from tests.integration.test_hf_sync import transfer
from tests.servers.hfhub import FakeHub, HubRepo

pytestmark = pytest.mark.skipif(not socket_body.CAN_SPLICE, reason="os.splice needs Linux")

WEIGHT = (hashlib.sha256(b"splice").digest() * (1 + 9 * MiB // 32))[: 9 * MiB + 4321]


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.add(HubRepo("org/big", {"model.safetensors": WEIGHT, "config.json": b"{}"}))
        yield server


def url(hub: FakeHub) -> str:
    repo = next(iter(hub.repos.values()))
    return f"{hub.url}/org/big/resolve/{repo.sha}/model.safetensors"


def copy(hub: FakeHub, out: Path, **kw: object) -> tuple[int, int]:
    """Sync org/big into ``out`` with 3 MiB parts; returns (bytes spliced, retries)."""
    settings = transfer(part_size=3 * MiB, **kw)
    source = HFStore(parse_uri("hf://org/big"), HFCredentials(endpoint=hub.url), settings)
    try:
        result = sync(source, LocalStore(parse_uri(str(out)), out), settings)
        return source.http.spliced_bytes, result.retries
    finally:
        source.close()


def test_large_parts_are_spliced_into_place_and_verified(hub: FakeHub, tmp_path: Path) -> None:
    spliced, _ = copy(hub, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == WEIGHT
    assert spliced > 6 * MiB  # most of the weight never passed through Python
    manifest = json.loads((tmp_path / "out" / ".modelferry" / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == "model.safetensors")
    assert entry["sha256"] == hashlib.sha256(WEIGHT).hexdigest()


def test_a_connection_dropped_mid_splice_is_retried(hub: FakeHub, tmp_path: Path) -> None:
    hub.faults.drop_after = 2 * MiB  # past the buffered first read: the drop hits splice()
    hub.faults.drop_count = 2
    spliced, retries = copy(hub, tmp_path / "out")
    assert retries >= 2
    assert spliced > 0
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == WEIGHT


def test_corrupt_bytes_spliced_to_disk_are_caught_by_sha256(hub: FakeHub, tmp_path: Path) -> None:
    hub.faults.corrupt = "once"
    hub.faults.corrupt_path = "model.safetensors"
    settings = transfer(part_size=3 * MiB)
    source = HFStore(parse_uri("hf://org/big"), HFCredentials(endpoint=hub.url), settings)
    try:
        result = sync(source, LocalStore(parse_uri(str(tmp_path / "out")), tmp_path / "out"), settings)
    finally:
        source.close()
    assert result.refetched == ["model.safetensors"]
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == WEIGHT


def test_a_silent_server_mid_splice_is_a_stall_and_the_pipe_is_not_reused(hub: FakeHub, tmp_path: Path) -> None:
    hub.faults.slow_delay = 1.0  # one 64 KiB chunk a second: the stall timeout fires inside splice()
    client = RangedHTTPClient(connect_timeout=2.0, stall_timeout=0.2, pool_size=2)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        sink = FileSink(fd, 0, lambda exc: PermanentError(str(exc)))
        with pytest.raises(StalledError, match="stall"):
            for _ in client.get_range_into(url(hub), 0, 4 * MiB, sink):
                pass
        assert getattr(socket_body._pipes, "pipe", None) is None  # it may hold bytes of the failed range
    finally:
        os.close(fd)
        client.close()


def test_a_write_error_on_the_file_is_translated_by_the_sink(hub: FakeHub, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    fd = os.open(tmp_path / "f", os.O_RDONLY)  # splicing into it fails with EBADF
    seen: list[OSError] = []

    def translate(exc: OSError) -> Exception:
        seen.append(exc)
        return PermanentError(f"cannot write {tmp_path / 'f'}: {exc}", obj=str(tmp_path / "f"))

    client = RangedHTTPClient(connect_timeout=2.0, stall_timeout=5.0, pool_size=2)
    got: list[bytes | InPlace] = []
    try:
        with pytest.raises(PermanentError, match="cannot write"):
            for chunk in client.get_range_into(url(hub), 0, 4 * MiB, FileSink(fd, 0, translate)):
                got.append(chunk)
    finally:
        os.close(fd)
        client.close()
    assert seen and all(isinstance(c, bytes) for c in got)  # nothing was reported as written
    assert getattr(socket_body._pipes, "pipe", None) is None


def test_a_file_that_refuses_spliced_writes_gets_the_bytes_instead(hub: FakeHub, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # splice(2) says EINVAL
    client = RangedHTTPClient(connect_timeout=2.0, stall_timeout=5.0, pool_size=2)
    try:
        chunks = list(client.get_range_into(url(hub), MiB, 4 * MiB, FileSink(fd, 0, lambda exc: exc)))
    finally:
        os.close(fd)
        client.close()
    assert all(isinstance(c, bytes) for c in chunks)
    assert b"".join(c for c in chunks if isinstance(c, bytes)) == WEIGHT[MiB : 5 * MiB]
    assert client.spliced_bytes == 0
