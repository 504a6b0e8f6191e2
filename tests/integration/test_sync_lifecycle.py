"""The life of one `modelferry sync` run: signals, progress, logs, the manifest, a full target, stalls.

Subprocess tests run the real console entry point (``python -m modelferry``) against the
local Hub stand-in, slowed down so a run is still in flight when the test acts on it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelferry.errors import InsufficientSpaceError, IntegrityError
from modelferry.settings import TransferSettings
from modelferry.storage.local import LocalStore, translate_os_error
from modelferry.transfer.sync import SyncResult, sync
from modelferry.uri import parse_uri
from tests.integration.test_hf_sync import MiB, assert_tree, hf_sync, model_files
from tests.servers.hfhub import CHUNK, HubRepo
from tests.servers.lifecycle import NullBucket, StallingHub, finish, journaled_parts, spawn, terminate, wait_for

TOKEN = "sekrit-gated-token-0123456789"  # not hf_-shaped: only register_secret can keep it out of logs
MANIFEST = Path(".modelferry") / "manifest.json"
PROGRESS_RE = re.compile(r"^progress: \d+/\d+ files, \d+/\d+ bytes, \d+\.\d MB/s, eta (\d+s|unknown)$")


@pytest.fixture
def hub() -> Iterator[StallingHub]:
    server = StallingHub(token=TOKEN)
    with server:
        yield server


def big_model() -> dict[str, bytes]:
    """model_files() with an 8 MiB weight: eight 1 MiB parts, slow enough to interrupt."""
    files = model_files()
    files["model.safetensors"] = (files["model.safetensors"] * 3)[: 8 * MiB]
    return files


def final_files(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and ".modelferry" not in p.parts
    }


# -- 1. SIGTERM: drain, exit 1, keep partials, resume -------------------------------------


def test_sigterm_drains_exits_1_keeps_partials_and_a_rerun_resumes(hub: StallingHub, tmp_path: Path) -> None:
    files = big_model()
    hub.add(HubRepo("org/big", files))
    hub.faults.slow_delay = 0.05  # ~0.8 s per 1 MiB part
    out = tmp_path / "out"
    proc = spawn(
        tmp_path, "sync", "hf://org/big", str(out), "--hf-endpoint", hub.url, "--part-size", "1MiB",
        "--concurrency", "2", "--json", "--termination-log", str(tmp_path / "term"),
    )  # fmt: skip
    try:
        assert wait_for(lambda: len(journaled_parts(out)) >= 2, proc), "no part was journaled"
        assert proc.poll() is None, "the copy finished before it could be signalled"
        code, drained_in = terminate(proc, timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (tmp_path / "stderr").read_text()
    assert code == 1, err
    assert drained_in < 10, f"took {drained_in:.1f}s to drain"  # generous: a hang, not a timing, fails this
    assert "received signal 15" in err and "Cancelled" in err
    assert json.loads((tmp_path / "term").read_text())["reason"] == "Cancelled"
    failure = json.loads((tmp_path / "stdout").read_text())  # --json answers on failure too
    assert (failure["status"], failure["reason"], failure["exit_code"]) == ("failed", "Cancelled", 1)
    # Nothing incomplete under a final name, no manifest, the partial and its journal kept.
    for path, data in final_files(out).items():
        assert data == files[path], f"{path} is under its final name but incomplete"
    assert "model.safetensors" not in final_files(out)
    assert not (out / MANIFEST).exists()
    partial = out / ".modelferry" / "partial"
    assert list(partial.glob("*.part")) and list(partial.glob("*.journal"))
    done = journaled_parts(out)
    assert 2 <= len(done) < 8

    before = len(hub.file_gets())
    hub.faults.slow_delay = 0.0
    hf_sync(hub, "hf://org/big", out, concurrency=2)
    assert_tree(out, files)
    assert (out / MANIFEST).exists()
    rerun = [r for r in hub.file_gets()[before:] if r.path == "model.safetensors"]
    refetched = {r.range[0] // MiB for r in rerun if r.range}
    assert refetched == set(range(8)) - done
    assert not partial.exists()


# -- 2. progress lines, JSON logs without secrets, the --json summary -----------------------


def test_progress_lines_json_logs_and_summary_carry_no_secret(hub: StallingHub, tmp_path: Path) -> None:
    files = big_model()
    repo = hub.add(HubRepo("org/gated", files, gated=True))
    hub.faults.slow_delay = 0.01  # ~0.16 s per part: several progress intervals of 0.05 s
    out = tmp_path / "out"
    proc = spawn(
        tmp_path, "--log-format", "json", "--log-level", "debug", "sync", "hf://org/gated", str(out),
        "--hf-endpoint", hub.url, "--hf-token", TOKEN, "--part-size", "1MiB", "--concurrency", "2", "--json",
        "--termination-log", str(tmp_path / "term"),
        env={"MODELFERRY_PROGRESS_INTERVAL": "0.05"},
    )  # fmt: skip
    code = finish(proc)
    stdout, stderr = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert code == 0, stderr
    assert_tree(out, files)
    for text in (stdout, stderr, (tmp_path / "term").read_text(), (out / MANIFEST).read_text()):
        assert TOKEN not in text
    assert all(r.authorization == f"Bearer {TOKEN}" for r in hub.file_gets())  # the token was really used

    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    progress = [r for r in records if r["logger"] == "modelferry.progress"]
    assert progress, "no progress line off a terminal"
    for r in progress:
        assert PROGRESS_RE.match(r["message"]), r["message"]
        assert 0 <= r["bytes_done"] <= r["bytes_total"] == sum(len(d) for d in files.values())
        assert r["files_total"] == len(files)
        assert isinstance(r["rate_bytes_per_s"], int)
        assert r["eta_s"] is None or r["eta_s"] >= 0

    summary = json.loads(stdout)
    assert summary["status"] == "complete"
    assert summary["source"] == "hf://org/gated"
    assert summary["revision"] == repo.sha
    assert summary["files"] == summary["files_copied"] == len(files)
    assert summary["bytes"] == summary["bytes_copied"] == sum(len(d) for d in files.values())
    assert summary["files_skipped"] == summary["bytes_skipped"] == 0
    assert summary["bytes_transferred"] >= summary["bytes_copied"]
    assert summary["retries"] == 0 and summary["refetched"] == []
    assert summary["elapsed_s"] > 0 and summary["rate_mb_s"] >= 0
    assert json.loads((tmp_path / "term").read_text())["files_copied"] == len(files)


# -- 3. EFBIG (RLIMIT_FSIZE) is a clean InsufficientSpaceError ------------------------------


def test_efbig_translates_like_enospc() -> None:
    error = translate_os_error(OSError(errno.EFBIG, "File too large"), "/t/model.bin")
    assert isinstance(error, InsufficientSpaceError)
    assert error.exit_code == 3 and "/t/model.bin" in str(error) and "ulimit" in str(error)


# Files of at most 1 MiB; SIGXFSZ ignored so an oversized write fails with EFBIG instead of killing the process.
LIMIT_FILE_SIZE = """
import resource, signal
resource.setrlimit(resource.RLIMIT_FSIZE, (1048576, 1048576))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
"""


def test_file_size_limit_exits_3_with_no_partial_final_file(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "config.json").write_bytes(b"{}")
    (src / "model.safetensors").write_bytes(os.urandom(2 * MiB))
    proc = spawn(
        tmp_path, "sync", str(src), str(out), "--part-size", "1MiB", "--termination-log", str(tmp_path / "term"),
        prelude=LIMIT_FILE_SIZE,
    )  # fmt: skip
    code = finish(proc)
    err = (tmp_path / "stderr").read_text()
    assert code == 3, err
    assert "InsufficientSpaceError" in err and "file too large" in err and "model.safetensors" in err
    assert json.loads((tmp_path / "term").read_text())["reason"] == "InsufficientSpace"
    assert "model.safetensors" not in final_files(out)
    assert not (out / MANIFEST).exists()
    assert not list(out.rglob("*.part")) and not list(out.rglob("*.journal"))  # a permanent error keeps nothing


# -- 4. the manifest: withdrawn before a changed sync, rewritten last, absent after a failure --


def changed(files: dict[str, bytes]) -> dict[str, bytes]:
    weight = bytearray(files["model.safetensors"])
    weight[5 * MiB] ^= 0xFF
    return {**files, "model.safetensors": bytes(weight)}


def test_manifest_is_withdrawn_during_a_changed_sync_and_written_last(hub: StallingHub, tmp_path: Path) -> None:
    files = big_model()
    hub.add(HubRepo("org/model", files))
    out = tmp_path / "out"
    first = hf_sync(hub, "hf://org/model", out)
    assert json.loads((out / MANIFEST).read_text())["revision"] == first.revision

    new_files = changed(files)
    new_repo = hub.add(HubRepo("org/model", new_files))
    hub.faults.slow_delay = 0.02
    before = len(hub.file_gets())
    results: list[SyncResult | BaseException] = []

    def run() -> None:
        try:
            results.append(hf_sync(hub, "hf://org/model", out, concurrency=2))
        except BaseException as exc:  # reported by the assertions below
            results.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert wait_for(lambda: len(hub.file_gets()) > before or bool(results)), "the changed sync never started"
        assert not results, "the changed sync finished before the manifest could be checked"
        assert not (out / MANIFEST).exists(), "the old manifest was still there while files changed"
    finally:
        worker.join(timeout=60)
    assert isinstance(results[0], SyncResult), results
    assert_tree(out, new_files)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["revision"] == new_repo.sha
    # Written last: no file of the copy is newer than the manifest.
    newest = max((out / p).stat().st_mtime_ns for p in new_files)
    assert (out / MANIFEST).stat().st_mtime_ns >= newest


def test_a_failed_changed_sync_leaves_no_manifest(hub: StallingHub, tmp_path: Path) -> None:
    files = big_model()
    hub.add(HubRepo("org/model", files))
    out = tmp_path / "out"
    hf_sync(hub, "hf://org/model", out)
    assert (out / MANIFEST).exists()
    hub.add(HubRepo("org/model", changed(files)))
    hub.faults.corrupt = "always"
    hub.faults.corrupt_path = "model.safetensors"
    with pytest.raises(IntegrityError, match=r"model\.safetensors"):
        hf_sync(hub, "hf://org/model", out, retries=0)
    assert not (out / MANIFEST).exists()
    assert (out / "model.safetensors").read_bytes() == files["model.safetensors"]  # the old, whole file


def test_a_failed_first_sync_leaves_no_manifest(hub: StallingHub, tmp_path: Path) -> None:
    hub.add(HubRepo("org/model", model_files()))
    hub.faults.corrupt = "always"
    hub.faults.corrupt_path = "model.safetensors"
    with pytest.raises(IntegrityError):
        hf_sync(hub, "hf://org/model", tmp_path / "out", retries=0)
    assert not (tmp_path / "out" / MANIFEST).exists()


# -- 5. a stalled stream is cut after the stall timeout and the part retried -----------------


@pytest.mark.parametrize("stall_after", [2 * CHUNK, -1], ids=["mid-body", "before-headers"])
def test_stalled_stream_is_retried_after_the_stall_timeout(
    hub: StallingHub, tmp_path: Path, caplog: pytest.LogCaptureFixture, stall_after: int
) -> None:
    files = model_files()
    hub.add(HubRepo("org/model", files))
    hub.stall_after = stall_after
    hub.stall_count = 1
    result = hf_sync(hub, "hf://org/model", tmp_path / "out", stall_timeout=1.0, concurrency=2)
    assert hub.stalled == 1
    assert result.retries >= 1
    assert any("stall timeout" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")  # StalledError
    assert result.refetched == []  # the part retry fixed it; no whole-file refetch
    assert_tree(tmp_path / "out", files)
    assert (tmp_path / "out" / MANIFEST).exists()


# -- 6. memory stays bounded whatever the model size (object-store targets buffer parts) -----


def test_memory_is_bounded_by_the_budget_not_the_model_size(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    block = os.urandom(MiB)
    with open(src / "model.safetensors", "wb") as fh:
        for n in range(64):  # 8x the memory budget
            fh.write(block[n:] + block[:n])
    budget = 8 * MiB
    settings = TransferSettings(part_size=MiB, concurrency=8, memory_budget=budget, free_space_margin=0)
    bucket = NullBucket()
    tracemalloc.start()
    try:
        result = sync(LocalStore(parse_uri(str(src)), src), bucket, settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert bucket.placed == {"model.safetensors": 64}
    assert result.manifest is not None and result.manifest.files[0].size == 64 * MiB
    assert json.loads(bucket.small[str(MANIFEST)])["files"][0]["size"] == 64 * MiB
    assert peak < 3 * budget, f"peak {peak / MiB:.1f} MiB for a 64 MiB file with an 8 MiB budget"


def test_an_unreadable_manifest_is_withdrawn_too(hub: StallingHub, tmp_path: Path) -> None:
    hub.add(HubRepo("org/model", model_files()))
    out = tmp_path / "out"
    (out / ".modelferry").mkdir(parents=True)
    (out / MANIFEST).write_text('{"files": [{"path": "model.safetensors"}]}')  # from a broken or foreign writer
    hub.faults.corrupt = "always"
    hub.faults.corrupt_path = "model.safetensors"
    with pytest.raises(IntegrityError):
        hf_sync(hub, "hf://org/model", out, retries=0)
    assert not (out / MANIFEST).exists()


# -- SIGTERM with a bucket target: nothing half-made is visible, the upload is kept for the rerun --


def test_sigterm_with_a_bucket_target_keeps_the_upload_for_the_rerun(hub: StallingHub, tmp_path: Path) -> None:
    from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, list_keys, shared_servers

    moto = shared_servers()[0]
    moto.reset()
    client = moto.create_bucket("lifecycle")
    files = model_files()
    files["model.safetensors"] = (files["model.safetensors"] * 4)[: 12 * MiB]  # three 5 MiB parts
    hub.add(HubRepo("org/big", files))
    hub.faults.slow_delay = 0.02  # ~1.6 s per 5 MiB part
    args = (
        "sync", "hf://org/big", "s3://lifecycle/models/big", "--hf-endpoint", hub.url,
        "--target-endpoint", moto.endpoint, "--addressing-style", "path", "--part-size", "5MiB",
        "--concurrency", "2", "--termination-log", str(tmp_path / "term"),
    )  # fmt: skip
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}
    proc = spawn(tmp_path, *args, env=env)

    def uploads() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = client.list_multipart_uploads(Bucket="lifecycle").get("Uploads", [])
        return found

    try:
        assert wait_for(lambda: bool(uploads()), proc), (tmp_path / "stderr").read_text()
        assert proc.poll() is None, "the copy finished before it could be signalled"
        proc.send_signal(signal.SIGTERM)
        code = finish(proc, timeout=15)
        moto_keys = list_keys(client, "lifecycle")
        kept = uploads()
        records = [k for k in moto_keys if k.startswith("models/big/.modelferry/partial/")]
        assert code == 1, (tmp_path / "stderr").read_text()
        assert "models/big/model.safetensors" not in moto_keys
        assert "models/big/.modelferry/manifest.json" not in moto_keys
        # The Job's next attempt resumes it; the record names it so a later run can also abort it.
        assert [u["Key"] for u in kept] == ["models/big/model.safetensors"]
        assert len(records) == 1
        record = json.loads(client.get_object(Bucket="lifecycle", Key=records[0])["Body"].read())
        assert record["upload_id"] == kept[0]["UploadId"]

        hub.faults.slow_delay = 0.0
        rerun = spawn(tmp_path, *args, env=env)
        assert finish(rerun, timeout=60) == 0, (tmp_path / "stderr").read_text()
        body = client.get_object(Bucket="lifecycle", Key="models/big/model.safetensors")["Body"].read()
        assert body == files["model.safetensors"]
        assert uploads() == []
        assert not [k for k in list_keys(client, "lifecycle") if "/partial/" in k]
    finally:
        if proc.poll() is None:
            proc.kill()
        moto.reset()
