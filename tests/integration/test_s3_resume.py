"""Uploads to S3 resume across runs: the record in the target, ListParts, and the saved hash state.

Real moto S3, the real engine and boto3; the source is a local directory that can be told to
fail (in-process runs) or the Hub stand-in slowed down (the SIGKILL run, a real child process).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelferry.errors import AccessDeniedError, IntegrityError, RetryableError
from modelferry.settings import HFCredentials, MiB, S3Credentials, TransferSettings
from modelferry.storage.base import PARTIAL_DIR, ObjectInfo, partial_stem
from modelferry.storage.hf import HFStore
from modelferry.storage.local import LocalStore
from modelferry.storage.s3 import S3Store
from modelferry.transfer.plan import SyncOptions
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri
from tests.servers.hfhub import FakeHub, HubRepo
from tests.servers.moto_session import clean_moto
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, MotoS3, list_keys

ROOT = Path(__file__).resolve().parents[2]
PART = 5 * MiB  # S3's smallest part
NAME = "big.bin"
RECORD = f"big/{PARTIAL_DIR}/{partial_stem(NAME)}.json"


@pytest.fixture
def moto() -> Iterator[MotoS3]:
    yield from clean_moto()


class FlakySource(LocalStore):
    """A local directory whose reads at or past ``fail_from`` fail (retryably), recording every read."""

    def __init__(self, root: Path, fail_from: int | None = None) -> None:
        super().__init__(parse_uri(str(root)), root)
        self.fail_from = fail_from
        self.reads: list[tuple[str, int]] = []

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        self.reads.append((path, start))
        if self.fail_from is not None and start >= self.fail_from:
            raise RetryableError("injected: the source went away", obj=path)
        return super().read(path, start, length, info=info)


def settings() -> TransferSettings:
    return TransferSettings(part_size=PART, concurrency=1, retries=1, backoff_base=0.01)


def target(moto: MotoS3) -> S3Store:
    creds = S3Credentials(endpoint_url=moto.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)
    return S3Store(parse_uri("s3://models/big"), creds, settings())


def run(source: LocalStore | HFStore, moto: MotoS3, options: SyncOptions | None = None) -> None:
    target_store = target(moto)
    try:
        sync(source, target_store, settings(), options or SyncOptions())
    finally:
        target_store.close()


def uploads(client: Any) -> list[dict[str, Any]]:
    return list(client.list_multipart_uploads(Bucket="models").get("Uploads") or [])


def record(client: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(client.get_object(Bucket="models", Key=RECORD)["Body"].read())
    return data


def stored(client: Any, key: str = f"big/{NAME}") -> bytes:
    return bytes(client.get_object(Bucket="models", Key=key)["Body"].read())


def interrupted_upload(moto: MotoS3, src: Path, *, parts: int = 6, fail_at: int = 3) -> tuple[Any, bytes]:
    """A run that stored ``fail_at`` parts of ``parts`` and then failed retryably."""
    client = moto.create_bucket("models")
    data = os.urandom(parts * PART - 123)
    src.mkdir(parents=True, exist_ok=True)
    (src / NAME).write_bytes(data)
    with pytest.raises(RetryableError, match="injected"):
        run(FlakySource(src, fail_from=fail_at * PART), moto)
    return client, data


def assert_complete(client: Any, data: bytes, *, leftover: set[str] | None = None) -> None:
    assert stored(client) == data
    manifest = json.loads(stored(client, "big/.modelferry/manifest.json"))
    entry = next(f for f in manifest["files"] if f["path"] == NAME)
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert {u["UploadId"] for u in uploads(client)} == (leftover or set())  # nothing unfinished of ours
    assert not [k for k in list_keys(client, "models", "big/") if "/partial/" in k]


def test_a_retryable_failure_keeps_the_upload_and_the_next_run_carries_on(moto: MotoS3, tmp_path: Path) -> None:
    client, data = interrupted_upload(moto, tmp_path / "src")
    assert not list_keys(client, "models", f"big/{NAME}")  # nothing under the final name
    kept = uploads(client)
    assert [u["Key"] for u in kept] == [f"big/{NAME}"]
    saved = record(client)
    assert saved["upload_id"] == kept[0]["UploadId"]
    assert saved["checkpoint"]["position"] == 3 * PART
    assert sorted(saved["parts"]) == ["0", "1", "2"]
    assert saved["parts"]["0"]["md5"] == hashlib.md5(data[:PART]).hexdigest()

    source = FlakySource(tmp_path / "src")
    run(source, moto)
    assert {start for _, start in source.reads} == {3 * PART, 4 * PART, 5 * PART}  # parts 0-2 not read again
    assert_complete(client, data)
    assert client.head_object(Bucket="models", Key=f"big/{NAME}")["ETag"].strip('"').endswith("-6")


def test_a_changed_source_starts_over_and_aborts_the_old_upload(moto: MotoS3, tmp_path: Path) -> None:
    client, _ = interrupted_upload(moto, tmp_path / "src")
    old = uploads(client)[0]["UploadId"]
    new_data = os.urandom(6 * PART - 123)  # same size, other bytes: only the mtime tells them apart
    (tmp_path / "src" / NAME).write_bytes(new_data)
    os.utime(tmp_path / "src" / NAME, ns=(time.time_ns(), time.time_ns() + 10**9))
    source = FlakySource(tmp_path / "src")
    run(source, moto)
    assert 0 in {start for _, start in source.reads}
    assert_complete(client, new_data)
    assert old not in {u["UploadId"] for u in uploads(client)}


def test_an_upload_gone_behind_our_back_starts_over(moto: MotoS3, tmp_path: Path) -> None:
    client, data = interrupted_upload(moto, tmp_path / "src")
    for u in uploads(client):  # what a lifecycle rule (AbortIncompleteMultipartUpload) does
        client.abort_multipart_upload(Bucket="models", Key=u["Key"], UploadId=u["UploadId"])
    source = FlakySource(tmp_path / "src")
    run(source, moto)
    assert {start for _, start in source.reads} == {i * PART for i in range(6)}
    assert_complete(client, data)


@pytest.mark.parametrize("damage", ["tag", "missing-part", "other-etag", "garbage"])
def test_a_record_that_cannot_be_trusted_starts_over(moto: MotoS3, tmp_path: Path, damage: str) -> None:
    client, data = interrupted_upload(moto, tmp_path / "src")
    old = uploads(client)[0]["UploadId"]
    saved = record(client)
    if damage == "tag":
        saved["checkpoint"]["tag"] = "openssl-0.9-pdp11"  # a state from another OpenSSL build or CPU
    elif damage == "missing-part":
        del saved["parts"]["1"]
    elif damage == "other-etag":  # the store holds other bytes for part 2 than the record says
        saved["parts"]["1"]["etag"] = '"0123456789abcdef0123456789abcdef"'
    body = b"{not json" if damage == "garbage" else json.dumps(saved).encode()
    client.put_object(Bucket="models", Key=RECORD, Body=body)
    source = FlakySource(tmp_path / "src")
    run(source, moto)
    assert 0 in {start for _, start in source.reads}
    # An unreadable record names no upload: that one is left to the bucket's lifecycle rule, never guessed at.
    assert_complete(client, data, leftover={old} if damage == "garbage" else set())


def test_a_record_that_cannot_be_read_starts_over(
    moto: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, data = interrupted_upload(moto, tmp_path / "src")
    old = uploads(client)[0]["UploadId"]
    real_read = S3Store.read_bytes

    def read_bytes(self: S3Store, path: str) -> bytes | None:
        if "/partial/" in f"/{path}":  # as a bucket policy denying reads under .modelferry/partial/ would
            raise AccessDeniedError(f"access denied for {path}", obj=path)
        return real_read(self, path)

    monkeypatch.setattr(S3Store, "read_bytes", read_bytes)
    source = FlakySource(tmp_path / "src")
    run(source, moto)
    assert 0 in {start for _, start in source.reads}
    assert_complete(client, data, leftover={old})  # a record nobody can read names no upload to abort


def test_a_file_left_out_of_the_next_run_has_its_upload_aborted(moto: MotoS3, tmp_path: Path) -> None:
    client, _ = interrupted_upload(moto, tmp_path / "src")
    (tmp_path / "src" / "config.json").write_bytes(b"{}")
    run(FlakySource(tmp_path / "src"), moto, SyncOptions(exclude=(NAME,)))
    assert stored(client, "big/config.json") == b"{}"
    assert uploads(client) == []
    assert not [k for k in list_keys(client, "models", "big/") if "/partial/" in k]


def test_a_record_that_cannot_be_written_leaves_no_orphan_upload(
    moto: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = moto.create_bucket("models")
    data = os.urandom(6 * PART - 123)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / NAME).write_bytes(data)
    real_put = S3Store.put_bytes

    def put_bytes(self: S3Store, path: str, body: bytes) -> None:
        if "/partial/" in f"/{path}":  # as a bucket policy denying writes under .modelferry/partial/ would
            raise AccessDeniedError(f"access denied for {path}", obj=path)
        real_put(self, path, body)

    monkeypatch.setattr(S3Store, "put_bytes", put_bytes)
    with pytest.raises(RetryableError, match="injected"):
        run(FlakySource(tmp_path / "src", fail_from=3 * PART), moto)
    assert uploads(client) == []  # nothing could find the parts again: they are not kept
    warnings = [r for r in caplog.records if "could not write the resume record" in r.getMessage()]
    assert len(warnings) == 1  # said once, not at every part
    run(FlakySource(tmp_path / "src"), moto)  # and a copy that is not interrupted still succeeds
    assert_complete(client, data)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


def test_a_checksum_failure_aborts_the_upload_and_drops_the_record(hub: FakeHub, moto: MotoS3, tmp_path: Path) -> None:
    client = moto.create_bucket("models")
    hub.add(HubRepo("org/big", {NAME: os.urandom(3 * PART)}))
    hub.faults.corrupt = "always"
    source = HFStore(parse_uri("hf://org/big"), HFCredentials(endpoint=hub.url), settings())
    with pytest.raises(IntegrityError):
        run(source, moto)
    assert uploads(client) == []
    assert not list_keys(client, "models", "big/")


@pytest.mark.slow
def test_sigkill_mid_upload_then_rerun_resumes_from_the_record(
    hub: FakeHub, moto: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = moto.create_bucket("models")
    data = os.urandom(8 * PART)
    hub.add(HubRepo("org/big", {NAME: data}))
    hub.faults.slow_delay = 0.02  # ~1.6 s per 5 MiB part and connection
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    cmd = [
        sys.executable, "-m", "modelferry", "sync", "hf://org/big", "s3://models/big", "--hf-endpoint", hub.url,
        "--target-endpoint", moto.endpoint, "--part-size", "5MiB", "--concurrency", "2",
        "--termination-log", str(tmp_path / "term"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    position = 0
    try:
        deadline = time.monotonic() + 90
        while position < 2 * PART and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            if RECORD in list_keys(client, "models", "big/"):
                position = (record(client).get("checkpoint") or {}).get("position", 0)
        assert proc.poll() is None, "the copy finished (or failed) before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    position = record(client)["checkpoint"]["position"]
    assert 2 * PART <= position < len(data)
    assert not list_keys(client, "models", f"big/{NAME}")
    assert len(uploads(client)) == 1

    before = len(hub.file_gets())
    hub.faults.slow_delay = 0.0
    run(HFStore(parse_uri("hf://org/big"), HFCredentials(endpoint=hub.url), settings()), moto)
    starts = {r.range[0] for r in hub.file_gets()[before:] if r.range}
    assert starts and min(starts) >= position  # nothing before the recorded position is fetched again
    assert_complete(client, data)
