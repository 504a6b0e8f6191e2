"""S3 fast uploads: parts and objects PUT on presigned URLs, against a real moto server and error stand-ins."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from modelferry.settings import MiB, S3Credentials, TransferSettings
from modelferry.storage.buffered_part import BUFFERS, BufferedPart, PartBuffers
from modelferry.storage.s3 import S3Store
from modelferry.storage.s3_fastwrite import error_document
from modelferry.storage.s3_upload import SHA256_META
from modelferry.uri import parse_uri
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, MotoS3, shared_servers


@pytest.fixture
def moto() -> Iterator[MotoS3]:
    server = shared_servers()[0]
    server.reset()
    yield server
    server.reset()


def make_store(endpoint: str, uri: str, **kwargs: Any) -> S3Store:
    creds = S3Credentials(endpoint_url=endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)
    return S3Store(parse_uri(uri), creds, TransferSettings(part_size=5 * MiB, concurrency=4), **kwargs)


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
