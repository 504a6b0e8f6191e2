"""S3 fast paths: presigned GET and PUT URLs through RangedHTTPClient, against moto and status stand-ins."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from modelferry.errors import AccessDeniedError, NotFoundError, PermanentError, RetryableError, ThrottledError
from modelferry.settings import MiB, S3Credentials, TransferSettings
from modelferry.storage.base import ObjectInfo
from modelferry.storage.buffered_part import BUFFERS, BufferedPart, PartBuffers
from modelferry.storage.http import RangedHTTPClient
from modelferry.storage.s3 import S3Store
from modelferry.storage.s3_fastread import PresignedReader
from modelferry.storage.s3_fastwrite import PresignedWriter, error_document
from modelferry.storage.s3_upload import SHA256_META
from modelferry.uri import parse_uri
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, MotoS3, shared_servers


@pytest.fixture
def moto() -> Iterator[MotoS3]:
    server = shared_servers()[0]
    server.reset()
    yield server
    server.reset()


def make_store(endpoint: str, uri: str, *, secret: str = SECRET_KEY, **kwargs: Any) -> S3Store:
    creds = S3Credentials(endpoint_url=endpoint, access_key_id=ACCESS_KEY, secret_access_key=secret)
    return S3Store(parse_uri(uri), creds, TransferSettings(part_size=5 * MiB, concurrency=4), **kwargs)


def read_all(store: S3Store, path: str, start: int, length: int, info: ObjectInfo | None = None) -> bytes:
    return b"".join(store.read(path, start, length, info=info))


def test_ranged_reads_go_through_presigned_urls_byte_for_byte(moto: MotoS3) -> None:
    client = moto.create_bucket("fast")
    data = os.urandom(3 * MiB + 17)
    client.put_object(Bucket="fast", Key="m/w.bin", Body=data)
    store = make_store(moto.endpoint, "s3://fast/m")
    assert store.fast_reader is not None
    info = store.stat("w.bin")
    for start, length in [(0, len(data)), (1, 10), (MiB - 3, MiB + 9), (len(data) - 5, 5)]:
        assert read_all(store, "w.bin", start, length, info) == data[start : start + length]
    assert store.stats["get_object"] == 0  # no boto3 StreamingBody reads
    assert store.fast_reader.presigned == 1  # one URL served every range
    store.close()


def test_bearer_mode_and_fallback_use_boto3_reads(moto: MotoS3) -> None:
    client = moto.create_bucket("slow")
    data = os.urandom(MiB)
    client.put_object(Bucket="slow", Key="m/w.bin", Body=data)
    bearer = make_store(moto.endpoint, "s3://slow/m", before_send=lambda **_: None)
    assert bearer.fast_reader is None  # requests signed per call (COS IAM) cannot be presigned
    bearer.close()
    store = make_store(moto.endpoint, "s3://slow/m")
    store.fast_reader = None  # what bearer mode reads through
    assert read_all(store, "w.bin", 5, 1000) == data[5:1005]
    assert store.stats["get_object"] == 1
    store.close()


def test_expired_urls_are_refreshed(moto: MotoS3) -> None:
    client = moto.create_bucket("expiry")
    client.put_object(Bucket="expiry", Key="m/w.bin", Body=b"abcdef")
    store = make_store(moto.endpoint, "s3://expiry/m")
    now = [1000.0]
    reader = PresignedReader(store.client, "expiry", store._http, expires_in=10, clock=lambda: now[0])
    store.fast_reader = reader
    assert read_all(store, "w.bin", 0, 6) == b"abcdef"
    assert read_all(store, "w.bin", 1, 2) == b"bc"
    assert reader.presigned == 1
    now[0] += 9  # inside the refresh margin: a new URL before the old one expires
    assert read_all(store, "w.bin", 2, 2) == b"cd"
    assert reader.presigned == 2
    store.close()


def test_missing_object_names_bucket_and_key(moto: MotoS3) -> None:
    moto.create_bucket("gone")
    store = make_store(moto.endpoint, "s3://gone/m")
    with pytest.raises(NotFoundError) as err:
        read_all(store, "nope.bin", 0, 10)
    assert "gone" in str(err.value) and "nope.bin" in str(err.value)
    store.close()


def test_changed_object_is_a_clear_permanent_error(moto: MotoS3) -> None:
    client = moto.create_bucket("changed")
    client.put_object(Bucket="changed", Key="m/w.bin", Body=b"x" * 100)
    store = make_store(moto.endpoint, "s3://changed/m")
    stale = ObjectInfo(path="w.bin", size=100, etag="0" * 32)
    with pytest.raises(PermanentError) as err:
        read_all(store, "w.bin", 0, 100, stale)
    assert "changed during the copy" in str(err.value)
    store.close()


class _StatusHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the status named in the path (``/403``, ``/429``), counting requests."""

    hits: ClassVar[list[str]] = []
    md5s: ClassVar[list[str]] = []
    codes: ClassVar[dict[int, str]] = {
        400: "BadDigest",
        403: "AccessDenied",
        404: "NoSuchUpload",
        500: "InternalError",
        503: "SlowDown",
    }

    def do_PUT(self) -> None:
        """An upload answered with the status named in the path and its S3 error document."""
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.hits.append(self.path)
        self.md5s.append(self.headers.get("Content-MD5", ""))
        status = int(self.path.strip("/").split("?")[0])
        body = f"<Error><Code>{self.codes[status]}</Code><Message>says &lt;no&gt;</Message></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.hits.append(self.path)
        status = int(self.path.strip("/").split("?")[0])
        self.send_response(status)
        self.send_header("Retry-After", "7")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def status_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _StatusHandler.hits.clear()
    _StatusHandler.md5s.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _Presigner:
    def __init__(self, url: str) -> None:
        self.url = url

    def generate_presigned_url(self, *_: Any, **__: Any) -> str:
        return self.url


def _reader(url: str) -> PresignedReader:
    http_client = RangedHTTPClient(connect_timeout=5, stall_timeout=5)
    return PresignedReader(_Presigner(url), "bkt", http_client)


def test_forbidden_is_access_denied_after_one_fresh_url(status_server: str) -> None:
    # moto answers 500 to presigned URLs when it enforces auth, so a plain server plays the 403.
    reader = _reader(status_server + "/403")
    with pytest.raises(AccessDeniedError) as err:
        b"".join(reader.read("m/w.bin", 0, 10, etag=None, what="s3://bkt/m/w.bin"))
    assert err.value.hint and "s3:GetObject" in err.value.hint
    assert reader.presigned == 2 and len(_StatusHandler.hits) == 2  # an expired URL gets one more try


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_is_retryable_with_retry_after(status_server: str, status: int) -> None:
    reader = _reader(f"{status_server}/{status}")
    with pytest.raises(ThrottledError) as err:
        b"".join(reader.read("m/w.bin", 0, 10, etag=None, what="s3://bkt/m/w.bin"))
    assert err.value.retry_after == 7


@pytest.mark.parametrize(
    ("status", "kind", "attempts"),
    [
        (503, ThrottledError, 2),  # retried once here, as botocore would, then the engine's turn
        (500, RetryableError, 2),
        (403, AccessDeniedError, 1),
        (404, NotFoundError, 1),
        (400, PermanentError, 1),
    ],
)
def test_error_answers_are_translated_and_name_the_object(
    status_server: str, status: int, kind: type[Exception], attempts: int
) -> None:
    writer = PresignedWriter(
        _Presigner(f"{status_server}/{status}"),
        "bkt",
        RangedHTTPClient(connect_timeout=5, stall_timeout=5),
        endpoint=status_server,
        backoff=(0.01, 0.01),
    )
    with pytest.raises(kind) as err:
        writer.put("upload_part", {"Key": "m/w.bin"}, b"x" * 100, {"Content-MD5": "e"}, what="s3://bkt/m/w.bin")
    assert "s3://bkt/m/w.bin" in str(err.value)
    assert len(_StatusHandler.hits) == attempts
    assert _StatusHandler.md5s == ["e"] * attempts  # the checksum header travels with every attempt


def write(store: S3Store, path: str, data: bytes, part_size: int) -> str | None:
    upload = store.open_upload(path, len(data), part_size)
    for index, offset in enumerate(range(0, len(data), part_size)):
        part = upload.part(index, offset, min(part_size, len(data) - offset))
        chunk = data[offset : offset + part_size]
        for at in range(0, len(chunk), MiB):  # the engine writes in chunks
            part.write(chunk[at : at + MiB])
        part.commit()
    return upload.complete()


def test_parts_and_objects_go_out_on_presigned_urls(moto: MotoS3) -> None:
    client = moto.create_bucket("fastup")
    store = make_store(moto.endpoint, "s3://fastup/m")
    assert store.fast_writer is not None
    big, small = os.urandom(12 * MiB + 5), os.urandom(1000)
    etag = write(store, "w.bin", big, 5 * MiB)
    write(store, "config.json", small, 5 * MiB)
    assert store.fast_writer.requests == 4  # three parts and one object, none through botocore's pipeline
    assert store.stats["upload_part"] == 3 and store.stats["put_object"] == 1
    assert client.get_object(Bucket="fastup", Key="m/w.bin")["Body"].read() == big
    md5s = [hashlib.md5(big[o : o + 5 * MiB]).digest() for o in range(0, len(big), 5 * MiB)]
    assert etag == hashlib.md5(b"".join(md5s)).hexdigest() + "-3"
    head = client.head_object(Bucket="fastup", Key="m/config.json")
    assert head["Metadata"][SHA256_META] == hashlib.sha256(small).hexdigest()  # the signed metadata header arrived
    assert client.get_object(Bucket="fastup", Key="m/config.json")["Body"].read() == small
    store.close()


def test_bearer_mode_uploads_through_botocore(moto: MotoS3) -> None:
    client = moto.create_bucket("slowup")
    store = make_store(moto.endpoint, "s3://slowup/m", before_send=lambda **_: None)
    assert store.fast_writer is None  # requests signed per call (COS IAM) cannot be presigned
    write(store, "a.bin", b"abc", 5 * MiB)
    assert client.get_object(Bucket="slowup", Key="m/a.bin")["Body"].read() == b"abc"
    store.close()


def test_error_document_is_read_without_a_parser() -> None:
    doc = b"<Error><Code>SlowDown</Code><Message>a &amp; b</Message></Error>"
    assert error_document(doc) == {"Code": "SlowDown", "Message": "a & b"}
    assert error_document(b"not xml") == {}
    entity = b'<!DOCTYPE x [<!ENTITY e "boom">]><Error><Code>&e;</Code></Error>'
    assert error_document(entity) == {"Code": "&e;"}  # never expanded


def test_part_buffers_are_reused_up_to_their_cap() -> None:
    pool = PartBuffers(keep=3 * MiB)
    first = pool.take(2 * MiB)
    pool.give(first)
    assert pool.take(2 * MiB) is first and pool.reused == 1
    older, newer = bytearray(2 * MiB), bytearray(2 * MiB)
    pool.give(older)
    pool.give(newer)  # over the cap: the older one is dropped
    assert pool.held == 2 * MiB
    assert pool.take(2 * MiB) is newer
    assert pool.take(2 * MiB) is not older  # a fresh one
    pool.give(bytearray(100))  # small buffers are not kept
    assert pool.held == 0


class _Sink:
    path = "w.bin"
    describe = "s3://b/w.bin"

    def __init__(self) -> None:
        self.got: list[bytes] = []

    def commit_part(self, index: int, data: bytearray) -> None:
        self.got.append(bytes(data))


def test_buffered_part_refuses_too_many_or_too_few_bytes() -> None:
    sink = _Sink()
    part = BufferedPart(sink, 0, 2 * MiB)
    part.write(b"a" * MiB)
    part.write(memoryview(b"b" * MiB))
    part.commit()
    assert sink.got == [b"a" * MiB + b"b" * MiB]
    over = BufferedPart(sink, 1, 10)
    with pytest.raises(Exception, match="too many bytes"):
        over.write(b"x" * 11)
    short = BufferedPart(sink, 2, 10)
    short.write(b"x" * 9)
    with pytest.raises(Exception, match="ended early"):
        short.commit()
    short.discard()
    assert BUFFERS.keep > 0
