"""Data-plane failure paths against a real local Hub server with fault injection."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelferry.errors import (
    AccessDeniedError,
    InsufficientSpaceError,
    IntegrityError,
    NotFoundError,
    RetryableError,
    StalledError,
    ThrottledError,
)
from modelferry.storage.http import RangedHTTPClient
from modelferry.storage.local import LocalStore
from tests.integration.test_hf_sync import MiB, assert_tree, hf_sync, model_files, run_cli
from tests.servers.hfhub import FakeHub, HubRepo
from tests.servers.lifecycle import journaled_parts

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(token="hf_secret_token") as server:
        yield server


def final_files(out: Path) -> list[str]:
    if not out.exists():
        return []
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".modelferry" not in p.parts)


# -- network faults ------------------------------------------------------------------


def test_connection_dropped_mid_part_is_retried(hub: FakeHub, tmp_path: Path) -> None:
    files = model_files()
    hub.add(HubRepo("org/model", files))
    hub.faults.drop_after = 100_000
    hub.faults.drop_count = 2
    result = hf_sync(hub, "hf://org/model", tmp_path / "out")
    assert_tree(tmp_path / "out", files)
    assert result.retries >= 2
    assert result.refetched == []  # the retry fixed the part; no whole-file refetch was needed


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_honours_retry_after(hub: FakeHub, tmp_path: Path, status: int) -> None:
    files = {"model.safetensors": model_files()["model.safetensors"]}
    hub.add(HubRepo("org/model", files))
    hub.faults.throttle_status = status
    hub.faults.throttle_retry_after = 1
    hub.faults.throttle_count = 1
    hf_sync(hub, "hf://org/model", tmp_path / "out", concurrency=2)
    assert_tree(tmp_path / "out", files)
    throttled = [r for r in hub.requests if r.status == status]
    assert len(throttled) == 1
    retry = [r for r in hub.file_gets() if r.range == throttled[0].range and r.status == 206]
    assert len(retry) == 1
    # Backoff is jittered down to ~0.01 s here, so only Retry-After can explain a wait of a second.
    assert retry[0].time - throttled[0].time >= 1.0


def test_corrupt_bytes_once_are_refetched(hub: FakeHub, tmp_path: Path) -> None:
    files = model_files()
    hub.add(HubRepo("org/model", files))
    hub.faults.corrupt = "once"
    hub.faults.corrupt_path = "model.safetensors"
    result = hf_sync(hub, "hf://org/model", tmp_path / "out")
    assert result.refetched == ["model.safetensors"]
    assert_tree(tmp_path / "out", files)
    assert len(hub.file_gets("model.safetensors")) == 8  # four parts, twice


@pytest.mark.parametrize("path", ["model.safetensors", "config.json"])  # LFS sha256 and git blob sha1
def test_corrupt_bytes_always_fail_with_exit_3_and_no_final_file(
    hub: FakeHub, tmp_path: Path, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.add(HubRepo("org/model", model_files()))
    hub.faults.corrupt = "always"
    hub.faults.corrupt_path = path
    out = tmp_path / "out"
    code = run_cli(
        "sync", "hf://org/model", str(out), "--hf-endpoint", hub.url, "--part-size", "1MiB", "--retries", "1",
        "--termination-log", str(tmp_path / "term"),
    )  # fmt: skip
    assert code == 3
    assert path not in final_files(out)
    assert not (out / ".modelferry" / "manifest.json").exists()
    assert "failed verification" in capsys.readouterr().err
    assert json.loads((tmp_path / "term").read_text())["reason"] == "IntegrityCheckFailed"


def test_corrupt_always_raises_integrity_error(hub: FakeHub, tmp_path: Path) -> None:
    hub.add(HubRepo("org/model", model_files()))
    hub.faults.corrupt = "always"
    hub.faults.corrupt_path = "model.safetensors"
    with pytest.raises(IntegrityError, match=r"model\.safetensors"):
        hf_sync(hub, "hf://org/model", tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()


# -- resume after SIGKILL ------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_resumes_without_refetching(hub: FakeHub, tmp_path: Path) -> None:
    weight = (model_files()["model.safetensors"] * 3)[: 8 * MiB]
    files = {"model.safetensors": weight}
    hub.add(HubRepo("org/big", files))
    hub.faults.slow_delay = 0.03  # ~0.5 s per 1 MiB part
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "modelferry", "sync", "hf://org/big", str(out), "--hf-endpoint", hub.url,
        "--part-size", "1MiB", "--concurrency", "2", "--termination-log", str(tmp_path / "term"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(journaled_parts(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the copy finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists()
    done = journaled_parts(out)
    assert 2 <= len(done) < 8
    before = len(hub.file_gets())
    hub.faults.slow_delay = 0.0
    hf_sync(hub, "hf://org/big", out, concurrency=2)
    assert (out / "model.safetensors").read_bytes() == weight
    rerun = hub.file_gets()[before:]
    refetched = {r.range[0] // MiB for r in rerun if r.range}
    assert refetched.isdisjoint(done)
    assert refetched == set(range(8)) - done
    assert not (out / ".modelferry" / "partial").exists()


# -- metadata errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("hf://org/missing", "org/missing"),
        ("hf://org/model@no-such-branch", "no-such-branch"),
        ("hf://org/gated", "gated"),
        ("hf://datasets/org/model", "org/model"),
    ],
)
def test_missing_repo_bad_revision_gated_exit_3(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], uri: str, expected: str
) -> None:
    hub.add(HubRepo("org/model", {"config.json": b"{}"}))
    hub.add(HubRepo("org/gated", {"config.json": b"{}"}, gated=True))
    code = run_cli(
        "sync", uri, str(tmp_path / "out"), "--hf-endpoint", hub.url, "--termination-log", str(tmp_path / "term"),
    )  # fmt: skip
    assert code == 3
    err = capsys.readouterr().err
    assert expected in err
    if "gated" in uri:
        assert "HF_TOKEN" in err and "AccessDeniedError" in err
    assert not hub.file_gets()


def test_gated_repo_with_a_wrong_token_is_denied(hub: FakeHub, tmp_path: Path) -> None:
    hub.add(HubRepo("org/gated", {"config.json": b"{}"}, gated=True))
    with pytest.raises(AccessDeniedError, match="org/gated"):
        hf_sync(hub, "hf://org/gated", tmp_path / "out", token="wrong")


@pytest.mark.parametrize("name", ["../evil", "/abs/evil", "ok/../../evil"])
def test_hostile_names_in_the_tree_are_refused(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    entry = {"type": "file", "path": name, "size": 4, "oid": "0" * 40}
    hub.add(HubRepo("org/model", {"config.json": b"{}"}, extra_tree=[entry]))
    out = tmp_path / "work" / "out"
    code = run_cli(
        "sync", "hf://org/model", str(out), "--hf-endpoint", hub.url, "--termination-log", str(tmp_path / "term"),
    )  # fmt: skip
    assert code == 3
    assert "refusing" in capsys.readouterr().err
    assert not hub.file_gets()
    assert sorted(p.name for p in tmp_path.rglob("*evil*")) == []
    assert final_files(out) == []


# -- the target ---------------------------------------------------------------------


def test_size_limit_refused_before_any_byte_moves(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.add(HubRepo("org/model", model_files()))
    code = run_cli(
        "sync", "hf://org/model", str(tmp_path / "out"), "--hf-endpoint", hub.url, "--size-limit", "1MB",
        "--termination-log", str(tmp_path / "term"),
    )  # fmt: skip
    assert code == 3
    assert "size limit" in capsys.readouterr().err
    assert not [r for r in hub.requests if r.method == "GET"]
    assert not (tmp_path / "out").exists() or final_files(tmp_path / "out") == []


def test_free_space_precheck(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add(HubRepo("org/model", model_files()))
    monkeypatch.setattr(LocalStore, "free_space", lambda self: 1000)
    with pytest.raises(InsufficientSpaceError, match="bytes free"):
        hf_sync(hub, "hf://org/model", tmp_path / "out")
    assert not hub.file_gets()


def test_disk_full_mid_write_is_clean(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.add(HubRepo("org/model", model_files()))
    real_pwrite = os.pwrite
    written = [0]

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        if written[0] > MiB + MiB // 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written[0] += len(data)
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    out = tmp_path / "out"
    code = run_cli(
        "sync", "hf://org/model", str(out), "--hf-endpoint", hub.url, "--part-size", "1MiB",
        "--termination-log", str(tmp_path / "term"),
    )  # fmt: skip
    assert code == 3
    assert "InsufficientSpaceError" in capsys.readouterr().err
    assert "model.safetensors" not in final_files(out)
    assert not (out / ".modelferry" / "manifest.json").exists()
    assert not list((out / ".modelferry" / "partial").glob("*.part"))  # nothing resumable kept on a permanent error


# -- the ranged fetcher on its own -----------------------------------------------------


def client(stall: float = 5.0) -> RangedHTTPClient:
    return RangedHTTPClient(connect_timeout=2.0, stall_timeout=stall, pool_size=2)


def test_fetcher_stall_timeout(hub: FakeHub) -> None:
    repo = hub.add(HubRepo("org/model", model_files()))
    hub.faults.slow_delay = 1.0
    url = f"{hub.url}/org/model/resolve/{repo.sha}/model.safetensors"
    with pytest.raises(StalledError, match="stall"):
        b"".join(client(stall=0.2).get_range(url, 0, MiB))


def test_fetcher_status_mapping(hub: FakeHub) -> None:
    repo = hub.add(HubRepo("org/model", model_files()))
    hub.add(HubRepo("org/gated", {"config.json": b"{}"}, gated=True))
    http = client()
    with pytest.raises(NotFoundError):
        b"".join(http.get_range(f"{hub.url}/org/model/resolve/{repo.sha}/nope.bin", 0, 10))
    with pytest.raises(AccessDeniedError):
        b"".join(http.get_range(f"{hub.url}/org/gated/resolve/main/config.json", 0, 2))
    with pytest.raises(AccessDeniedError):
        b"".join(
            http.get_range(
                f"{hub.url}/org/gated/resolve/main/config.json", 0, 2, headers={"Authorization": "Bearer bad"}
            )
        )
    assert (
        b"".join(
            http.get_range(
                f"{hub.url}/org/gated/resolve/main/config.json",
                0,
                2,
                headers={"Authorization": "Bearer hf_secret_token"},
            )
        )
        == b"{}"
    )
    hub.faults.throttle_status, hub.faults.throttle_count, hub.faults.throttle_retry_after = 429, 1, 7
    with pytest.raises(ThrottledError) as throttled:
        b"".join(http.get_range(f"{hub.url}/org/model/resolve/main/config.json", 0, 2))
    assert throttled.value.retry_after == 7.0
    hub.faults.throttle_status, hub.faults.throttle_count = 500, 1
    with pytest.raises(RetryableError) as failed:
        b"".join(http.get_range(f"{hub.url}/org/model/resolve/main/config.json", 0, 2))
    assert not isinstance(failed.value, ThrottledError)
    hub.faults.drop_after, hub.faults.drop_count = 1000, 1
    with pytest.raises(RetryableError, match=r"interrupted|closed"):
        b"".join(http.get_range(f"{hub.url}/org/model/resolve/main/model.safetensors", 0, MiB))
    # After all that, the pool still serves a clean ranged read.
    data = b"".join(http.get_range(f"{hub.url}/org/model/resolve/main/model.safetensors", 10, 100))
    assert data == model_files()["model.safetensors"][10:110]


def test_fetcher_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RetryableError, match="connection failed"):
        b"".join(client().get_range(f"http://127.0.0.1:{port}/x", 0, 10))


def test_metadata_calls_are_retried(hub: FakeHub, tmp_path: Path) -> None:
    files = {"config.json": b"{}"}
    hub.add(HubRepo("org/model", files))
    hub.faults.api_error_count = 2
    hf_sync(hub, "hf://org/model", tmp_path / "out")
    assert_tree(tmp_path / "out", files)


def test_hub_down_exits_1(hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub.add(HubRepo("org/model", {"config.json": b"{}"}))
    hub.faults.api_error_status, hub.faults.api_error_count = 500, 100
    code = run_cli(
        "sync", "hf://org/model", str(tmp_path / "out"), "--hf-endpoint", hub.url, "--retries", "1",
        "--termination-log", str(tmp_path / "term"),
    )  # fmt: skip
    assert code == 1
    assert "org/model" in capsys.readouterr().err
