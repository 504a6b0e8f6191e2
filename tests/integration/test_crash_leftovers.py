"""Temp files of killed runs: never synced, removed by the next run (never a live run's); durable manifests."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelferry.enigma.format import is_encrypted
from modelferry.settings import Credentials, TransferSettings
from modelferry.storage import open_store
from modelferry.storage.base import MANIFEST_DIR
from modelferry.storage.tempfiles import is_temp_name
from modelferry.transfer.manifest import Manifest, remove_manifest, write_manifest
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri
from tests.servers.lifecycle import run_modelferry

ROOT = Path(__file__).resolve().parents[2]
GiB = 1 << 30


def enigma(*args: str, key: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelferry", "enigma", *args, "--key-file", str(key), "--workers", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def temps(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if is_temp_name(p.name)]


def size_or_zero(path: Path) -> int:
    """The size of a temp file the running process may rename away between listing and stat."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "enigma.key"
    path.write_bytes(os.urandom(32))
    return path


def test_killed_enigma_in_place_leaves_nothing_that_is_synced_or_kept(tmp_path: Path, key: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_bytes(b"{}")
    with open(model / "weights.bin", "wb") as fh:
        fh.truncate(GiB)  # sparse: cheap to make, long enough to encrypt that the kill lands mid-file
    proc = enigma("encrypt", str(model), "--in-place", key=key)
    deadline = time.monotonic() + 60
    while not [p for p in temps(model) if size_or_zero(p) > (1 << 20)]:
        assert proc.poll() is None, "enigma finished before it could be killed"
        assert time.monotonic() < deadline, "no temp file appeared"
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    (leftover,) = temps(model)
    assert leftover.name.startswith(".weights.bin.enigma-") and leftover.name.endswith(".tmp")

    # A sync of the folder never copies the partial ciphertext.
    out = tmp_path / "out"
    settings = TransferSettings(free_space_margin=0)
    sync(open_store(parse_uri(str(model)), Credentials()), open_store(parse_uri(str(out)), Credentials()), settings)
    assert sorted(p.name for p in out.iterdir()) == [".modelferry", "config.json", "weights.bin"]

    # A temp file a live process holds is not touched; the abandoned one is removed by the next run.
    live = model / f".config.json.enigma-{os.getpid()}-0123abcd.tmp"
    fd = os.open(live, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        again = enigma("encrypt", str(model), "--in-place", "--json", key=key)
        stdout, stderr = again.communicate(timeout=300)
        assert again.returncode == 0, stderr
        assert live.exists() and not leftover.exists()
    finally:
        os.close(fd)
    with open(model / "weights.bin", "rb") as fh:
        assert is_encrypted(fh.read(8))
    assert json.loads(stdout)["status"] == "complete"


def test_enigma_json_prints_a_failure_record(tmp_path: Path, key: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "weights.bin").write_bytes(b"not encrypted at all, long enough to be read" * 4)
    proc = enigma("decrypt", str(plain), "--in-place", "--json", key=key)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    record = json.loads(stdout)
    assert record["status"] == "failed" and record["exit_code"] == 3 and record["reason"] and record["message"]
    assert not temps(plain)  # and no temp left behind

    inspect = run_modelferry("enigma", "inspect", str(tmp_path / "missing"), "--json", timeout=120)
    assert inspect.returncode == 3 and json.loads(inspect.stdout)["reason"] == "SourceNotFound", inspect.stderr


def test_manifest_removal_and_rename_fsync_the_modelferry_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(parse_uri(str(tmp_path / "dst")), Credentials())
    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:  # the real fsync, and which inode it made durable
        real_fsync(fd)
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            synced.append(st.st_ino)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_manifest(store, Manifest(source="s3://b/m", revision=None))
    meta = (tmp_path / "dst" / MANIFEST_DIR).stat().st_ino
    assert meta in synced  # the rename of the new manifest is durable
    synced.clear()
    remove_manifest(store)
    assert meta in synced  # and so is its removal: a power loss cannot bring the old one back
    assert not (tmp_path / "dst" / MANIFEST_DIR / "manifest.json").exists()
