"""S3 backend against real moto servers: real boto3, the real engine and the CLI."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelferry.cli.main import main
from modelferry.errors import PermanentError
from modelferry.settings import MiB, S3Credentials, TransferSettings
from modelferry.storage.base import ObjectInfo
from modelferry.storage.local import LocalStore
from modelferry.storage.s3 import S3Store
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, MotoS3, list_keys, shared_servers, upload_multipart


@pytest.fixture
def moto_pair() -> Iterator[tuple[MotoS3, MotoS3]]:
    first, second = shared_servers()
    first.reset()
    yield first, second
    first.reset()


@pytest.fixture
def moto(moto_pair: tuple[MotoS3, MotoS3]) -> MotoS3:
    return moto_pair[0]


def s3_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)


def store(endpoint: str, uri: str, *, part_size: int = 5 * MiB, concurrency: int = 4) -> S3Store:
    creds = S3Credentials(endpoint_url=endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)
    return S3Store(parse_uri(uri), creds, TransferSettings(part_size=part_size, concurrency=concurrency))


def settings(part_size: int = 5 * MiB) -> TransferSettings:
    return TransferSettings(part_size=part_size, concurrency=4, retries=1, backoff_base=0.01)


def make_model(root: Path, big: int = 12 * MiB) -> dict[str, bytes]:
    files = {
        "config.json": b'{"model_type": "llama"}',
        "weights/model-00001.safetensors": os.urandom(big),
        "empty.txt": b"",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def run_cli(args: list[str], tmp_path: Path) -> tuple[int, dict[str, Any]]:
    term = tmp_path / "termination.json"
    with pytest.raises(SystemExit) as exc:
        main(["sync", *args, "--termination-log", str(term), "--concurrency", "4", "--retries", "1"])
    message = json.loads(term.read_text()) if term.exists() else {}
    return int(exc.value.code or 0), message


def test_local_to_s3_and_back_byte_for_byte(moto: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = moto.create_bucket("models")
    s3_env(monkeypatch, moto.endpoint)
    files = make_model(tmp_path / "src")
    code, summary = run_cli([str(tmp_path / "src"), "s3://models/llama", "--part-size", "5MiB"], tmp_path)
    assert code == 0, summary
    assert summary["files_copied"] == 3
    head = client.head_object(Bucket="models", Key="llama/weights/model-00001.safetensors")
    assert head["ETag"].strip('"').endswith("-3")  # really multipart: 12 MiB in 5 MiB parts
    manifest = json.loads(client.get_object(Bucket="models", Key="llama/.modelferry/manifest.json")["Body"].read())
    assert {f["path"] for f in manifest["files"]} == set(files)
    assert client.list_multipart_uploads(Bucket="models").get("Uploads", []) == []

    code, summary = run_cli(["s3://models/llama", str(tmp_path / "dst"), "--part-size", "5MiB"], tmp_path)
    assert code == 0, summary
    for rel, data in files.items():
        assert (tmp_path / "dst" / rel).read_bytes() == data
    assert (tmp_path / "dst" / ".modelferry" / "manifest.json").exists()


def test_second_run_skips_even_with_different_part_sizes(moto_pair: tuple[MotoS3, MotoS3], tmp_path: Path) -> None:
    first, second = moto_pair
    client_a = first.create_bucket("bucket-a")
    client_b = second.create_bucket("bucket-b")
    make_model(tmp_path / "src", big=16 * MiB)
    local = LocalStore(parse_uri(str(tmp_path / "src")), tmp_path / "src")
    sync(local, store(first.endpoint, "s3://bucket-a/m"), settings(8 * MiB))
    sync(local, store(second.endpoint, "s3://bucket-b/m"), settings(5 * MiB))
    key = "m/weights/model-00001.safetensors"
    etag_a = client_a.head_object(Bucket="bucket-a", Key=key)["ETag"]
    etag_b = client_b.head_object(Bucket="bucket-b", Key=key)["ETag"]
    assert etag_a != etag_b  # 2 parts vs 4 parts: ETags can never be compared

    source, target = store(first.endpoint, "s3://bucket-a/m"), store(second.endpoint, "s3://bucket-b/m")
    result = sync(source, target, settings(5 * MiB))
    assert result.files_copied == 0
    assert result.files_skipped == 3
    assert target.stats["upload_part"] == 0 and target.stats["put_object"] == 1  # only the manifest


def test_same_store_copies_server_side(moto: MotoS3, tmp_path: Path) -> None:
    client = moto.create_bucket("shared")
    files = make_model(tmp_path / "src")
    local = LocalStore(parse_uri(str(tmp_path / "src")), tmp_path / "src")
    sync(local, store(moto.endpoint, "s3://shared/a"), settings())
    source, target = store(moto.endpoint, "s3://shared/a"), store(moto.endpoint, "s3://shared/b")
    assert source.identity() == target.identity()
    target.copy_limit = 10 * MiB  # exercise UploadPartCopy on the 12 MiB file too
    result = sync(source, target, settings())
    assert result.files_copied == 3
    assert source.stats["ranged_get"] == 0  # no byte left the store
    assert target.stats["copy_object"] == 2 and target.stats["upload_part_copy"] == 3
    for rel, data in files.items():
        assert client.get_object(Bucket="shared", Key=f"b/{rel}")["Body"].read() == data


def test_two_stores_stream_and_verify_multipart_etag(moto_pair: tuple[MotoS3, MotoS3], tmp_path: Path) -> None:
    first, second = moto_pair
    client_a = first.create_bucket("src-bucket")
    client_b = second.create_bucket("dst-bucket")
    data = os.urandom(17 * MiB)
    upload_multipart(client_a, "src-bucket", "m/model.safetensors", data, 8 * MiB)  # another tool, no manifest
    client_a.put_object(Bucket="src-bucket", Key="m/config.json", Body=b"{}")
    source, target = store(first.endpoint, "s3://src-bucket/m"), store(second.endpoint, "s3://dst-bucket/m")
    assert source.identity() != target.identity()
    plan_info = {i.path: i for i in source.list()}
    assert plan_info["model.safetensors"].part_size == 8 * MiB
    result = sync(source, target, settings(5 * MiB))
    assert result.files_copied == 2
    assert source.stats["ranged_get"] == 4 and target.stats["upload_part"] == 3  # 3 parts aligned with 8 MiB + config
    assert client_b.get_object(Bucket="dst-bucket", Key="m/model.safetensors")["Body"].read() == data
    assert tmp_path.exists() and not any(tmp_path.iterdir())  # nothing staged locally
    again = sync(source, target, settings(5 * MiB))
    assert again.files_copied == 0


def test_prefix_matches_at_directory_boundary(moto: MotoS3) -> None:
    client = moto.create_bucket("prefixes")
    client.put_object(Bucket="prefixes", Key="model/a.bin", Body=b"a")
    client.put_object(Bucket="prefixes", Key="model/sub/b.bin", Body=b"b")
    client.put_object(Bucket="prefixes", Key="model-hf/c.bin", Body=b"c")
    client.put_object(Bucket="prefixes", Key="model", Body=b"not a file under the prefix")
    assert [i.path for i in store(moto.endpoint, "s3://prefixes/model").list()] == ["a.bin", "sub/b.bin"]


def test_listing_is_paginated(moto: MotoS3) -> None:
    client = moto.create_bucket("many")
    for n in range(120):
        client.put_object(Bucket="many", Key=f"p/f{n:04d}", Body=b"x")
    s3 = store(moto.endpoint, "s3://many/p")
    s3.page_size = 50
    assert len(list(s3.list())) == 120
    assert s3.stats["list_objects_v2"] == 3


def test_bad_credentials_exit_3(moto: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moto.create_bucket("locked")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    s3_env(monkeypatch, moto.endpoint)
    moto.enforce_auth()
    try:
        code, message = run_cli([str(tmp_path / "src"), "s3://locked/x"], tmp_path)
    finally:
        moto.reset()
    assert code == 3
    assert message["reason"] == "AccessDenied"
    assert "AWS_ACCESS_KEY_ID" in message["message"]
    assert SECRET_KEY not in json.dumps(message)


def test_missing_bucket_exit_3_names_bucket(moto: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s3_env(monkeypatch, moto.endpoint)
    code, message = run_cli(["s3://no-such-bucket/models", str(tmp_path / "dst")], tmp_path)
    assert code == 3
    assert message["reason"] == "SourceNotFound"
    assert "no-such-bucket" in message["message"]


class FailingSource(LocalStore):
    """Serves the first part of every file, then fails for good."""

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        if start > 0:
            raise PermanentError("disk gone", obj=path)
        return super().read(path, start, length, info=info)


def test_multipart_upload_aborted_on_failure(moto: MotoS3, tmp_path: Path) -> None:
    client = moto.create_bucket("aborts")
    make_model(tmp_path / "src")
    source = FailingSource(parse_uri(str(tmp_path / "src")), tmp_path / "src")
    target = store(moto.endpoint, "s3://aborts/m")
    with pytest.raises(PermanentError, match="disk gone"):
        sync(source, target, settings())
    assert target.stats["create_multipart_upload"] >= 1
    assert target.stats["abort_multipart_upload"] >= 1
    assert client.list_multipart_uploads(Bucket="aborts").get("Uploads", []) == []
    assert not any(k.endswith(".safetensors") for k in list_keys(client, "aborts"))


def test_stat_read_bytes_delete_and_put_bytes(moto: MotoS3) -> None:
    moto.create_bucket("small")
    s3 = store(moto.endpoint, "s3://small/p")
    s3.put_bytes("x/y.json", b"{}")
    assert s3.read_bytes("x/y.json") == b"{}"
    info = s3.stat("x/y.json")
    assert info is not None and info.size == 2 and info.md5 == "99914b932bd37a50b983c5e7c90ae93b"
    s3.delete("x/y.json")
    assert s3.stat("x/y.json") is None and s3.read_bytes("x/y.json") is None


def test_sample_command_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sample", "--size-mb", "3", "--workdir", str(tmp_path / "w"), "--json"])
    assert exc.value.code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "complete"
    assert set(summary["files"]) >= {"config.json", "tokenizer.json", "model-00001-of-00002.safetensors"}
    assert summary["upload"]["files_copied"] == 5 and summary["download"]["files_copied"] == 5
    shard = (tmp_path / "w" / "copy" / "model-00002-of-00002.safetensors").read_bytes()
    header_len = int.from_bytes(shard[:8], "little")
    header = json.loads(shard[8 : 8 + header_len])
    assert header["model.layers.1.mlp.weight"]["data_offsets"][1] == len(shard) - 8 - header_len
    assert (tmp_path / "w" / "copy" / ".modelferry" / "manifest.json").exists()


class _Raw:
    """Stands in for urllib3's response: the whole body at once, or a body that ends early."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield self.body

    def read(self, amt: int | None = None) -> bytes:
        chunk, self.body = (self.body, b"") if amt is None else (self.body[:amt], self.body[amt:])
        return chunk

    def close(self) -> None:
        return None


def test_throttled_reads_are_retried_by_the_engine(moto: MotoS3, tmp_path: Path) -> None:
    from botocore.awsrequest import AWSResponse

    client = moto.create_bucket("throttled")
    data = os.urandom(MiB)  # one part: one ranged GET
    client.put_object(Bucket="throttled", Key="m/w.bin", Body=data)
    source = store(moto.endpoint, "s3://throttled/m")
    failures = {"left": 2}  # botocore retries once itself, so the engine sees the second one
    body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

    def throttle(request: Any, **_: Any) -> AWSResponse | None:
        if request.method == "GET" and "Range" in request.headers and failures["left"] > 0:
            failures["left"] -= 1
            return AWSResponse(request.url, 503, {"Retry-After": "0"}, _Raw(body))
        return None

    source.fast_reader = None  # this test exercises the boto3 read path (fast path: test_s3_fastpath.py)
    source.client.meta.events.register("before-send.s3", throttle)
    result = sync(source, LocalStore(parse_uri(str(tmp_path / "dst")), tmp_path / "dst"), settings())
    assert failures["left"] == 0
    assert result.retries >= 1
    assert (tmp_path / "dst" / "w.bin").read_bytes() == data


def test_connection_dropped_mid_part_is_refetched(moto: MotoS3, tmp_path: Path) -> None:
    from botocore.awsrequest import AWSResponse

    client = moto.create_bucket("dropped")
    data = os.urandom(MiB)
    client.put_object(Bucket="dropped", Key="m/w.bin", Body=data)
    source = store(moto.endpoint, "s3://dropped/m")
    dropped = {"left": 1}

    def cut_short(request: Any, **_: Any) -> AWSResponse | None:
        if request.method == "GET" and "Range" in request.headers and dropped["left"] > 0:
            dropped["left"] -= 1
            headers = {"Content-Length": str(len(data)), "Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"}
            return AWSResponse(request.url, 206, headers, _Raw(data[: len(data) // 3]))  # the peer hangs up
        return None

    source.fast_reader = None  # this test exercises the boto3 read path (fast path: test_s3_fastpath.py)
    source.client.meta.events.register("before-send.s3", cut_short)
    result = sync(source, LocalStore(parse_uri(str(tmp_path / "dst")), tmp_path / "dst"), settings())
    assert dropped["left"] == 0 and result.retries >= 1
    assert (tmp_path / "dst" / "w.bin").read_bytes() == data


def test_sha256_from_full_object_checksum_and_own_metadata(moto: MotoS3) -> None:
    import hashlib

    client = moto.create_bucket("checksums")
    body = b"weights" * 1000
    client.put_object(Bucket="checksums", Key="m/a.bin", Body=body, ChecksumAlgorithm="SHA256")
    s3 = store(moto.endpoint, "s3://checksums/m")
    listed = {i.path: i for i in s3.list()}
    assert listed["a.bin"].sha256 == hashlib.sha256(body).hexdigest()
    upload = s3.open_upload("b.bin", len(body), 5 * MiB)
    writer = upload.part(0, 0, len(body))
    writer.write(body)
    writer.commit()
    upload.complete()
    info = s3.stat("b.bin")
    assert info is not None and info.sha256 == hashlib.sha256(body).hexdigest()


def test_abort_calls_abort_multipart_upload(moto: MotoS3) -> None:
    client = moto.create_bucket("aborted")
    s3 = store(moto.endpoint, "s3://aborted/m")
    upload = s3.open_upload("big.bin", 11 * MiB, 5 * MiB)
    writer = upload.part(0, 0, 5 * MiB)
    writer.write(os.urandom(5 * MiB))
    writer.commit()
    assert len(client.list_multipart_uploads(Bucket="aborted")["Uploads"]) == 1
    upload.abort(keep_partial=True)  # even a retryable failure: parts are not resumable on S3
    assert client.list_multipart_uploads(Bucket="aborted").get("Uploads", []) == []
    assert s3.stats["abort_multipart_upload"] == 1
    assert list_keys(client, "aborted") == []
