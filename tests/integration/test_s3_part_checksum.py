"""What S3 parts carry for the store to verify: CRC32 where it is verified, Content-MD5 everywhere else."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelferry.errors import PermanentError, RetryableError
from modelferry.settings import MiB, S3Credentials, TransferSettings
from modelferry.storage.local import LocalStore
from modelferry.storage.s3 import S3Store
from modelferry.storage.s3_upload import choose_part_checksum, crc32_b64
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri
from tests.integration.test_s3_fastpath import moto, write
from tests.integration.test_s3_resume import FlakySource
from tests.servers.checksum_s3 import ChecksumS3
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, MotoS3

__all__ = ["moto"]  # the fixture, shared with the fast-path tests
DATA = os.urandom(12 * MiB + 5)  # three parts of 5 MiB
PART = 5 * MiB


def make_store(endpoint: str, uri: str, checksum: str) -> S3Store:
    creds = S3Credentials(endpoint_url=endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)
    transfer = TransferSettings(part_size=PART, concurrency=4, upload_checksum=checksum, backoff_base=0.01)
    return S3Store(parse_uri(uri), creds, transfer)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[ChecksumS3]:
    with ChecksumS3(request.param) as srv:
        yield srv


def joined(srv: ChecksumS3) -> bytes:
    return b"".join(srv.stored[n] for n in sorted(srv.stored))


@pytest.mark.parametrize(
    ("setting", "endpoint", "chosen"),
    [
        ("auto", None, "crc32"),
        ("auto", "https://s3.eu-west-1.amazonaws.com", "crc32"),
        ("auto", "https://bucket.s3.amazonaws.com:443", "crc32"),
        ("auto", "http://127.0.0.1:9000", "etag"),
        ("auto", "https://s3.amazonaws.com.evil.example", "etag"),
        ("md5", None, "md5"),
        ("crc32", "http://127.0.0.1:9000", "crc32"),
    ],
)
def test_auto_chooses_crc32_on_aws_s3_only(setting: str, endpoint: str | None, chosen: str) -> None:
    assert choose_part_checksum(setting, endpoint) == chosen


@pytest.mark.parametrize("server", ["verify"], indirect=True)
def test_crc32_parts_carry_no_md5_where_the_store_verifies_them(server: ChecksumS3) -> None:
    store = make_store(server.url, "s3://bkt/m", "crc32")
    write(store, "w.bin", DATA, PART)
    assert [(n, md5) for n, _crc, md5 in server.parts] == [(1, None), (2, None), (3, None)]
    assert [crc for _n, crc, _md5 in server.parts] == [crc32_b64(DATA[o : o + PART]) for o in range(0, len(DATA), PART)]
    assert joined(server) == DATA
    assert server.created[0].get("x-amz-checksum-algorithm") == "CRC32"  # AWS needs the upload created for it
    assert server.completions[0].count("<ChecksumCRC32>") == 3  # ... and completed with every part's CRC32
    assert store.part_checksum == "crc32"
    store.close()


@pytest.mark.parametrize("server", ["ignore"], indirect=True)
def test_a_store_ignoring_crc32_gets_the_part_again_with_content_md5(server: ChecksumS3) -> None:
    store = make_store(server.url, "s3://bkt/m", "crc32")
    write(store, "w.bin", DATA, PART)
    sent = [(n, crc is not None, md5 is not None) for n, crc, md5 in server.parts]
    # Part 1 went with CRC32, came back without it, and went again with Content-MD5; the rest MD5 only.
    assert sent == [(1, True, False), (1, False, True), (2, False, True), (3, False, True)]
    assert store.part_checksum == "md5"  # decided once for the endpoint
    assert joined(server) == DATA
    assert "<ChecksumCRC32>" not in server.completions[0]
    store.close()


@pytest.mark.parametrize("server", ["wrong"], indirect=True)
def test_a_different_crc32_in_the_answer_is_a_retryable_error(server: ChecksumS3) -> None:
    store = make_store(server.url, "s3://bkt/m", "crc32")
    with pytest.raises(RetryableError) as err:
        write(store, "w.bin", DATA, PART)
    assert "part 1 of s3://bkt/m/w.bin was stored with CRC32" in str(err.value)
    assert store.part_checksum == "crc32"  # the store does verify: it is its answer that is wrong
    store.close()


@pytest.mark.parametrize("server", ["ignore"], indirect=True)
def test_auto_checks_the_etag_off_aws(server: ChecksumS3) -> None:
    store = make_store(server.url, "s3://bkt/m", "auto")
    write(store, "w.bin", DATA, PART)
    assert server.parts == [(1, None, None), (2, None, None), (3, None, None)]  # the store hashes each part once
    assert joined(server) == DATA and store.part_checksum == "etag"
    store.close()


@pytest.mark.parametrize("server", ["ignore"], indirect=True)
def test_md5_sends_content_md5(server: ChecksumS3) -> None:
    store = make_store(server.url, "s3://bkt/m", "md5")
    write(store, "w.bin", DATA, PART)
    assert all(crc is None and md5 for _n, crc, md5 in server.parts)
    assert len(server.parts) == 3 and joined(server) == DATA
    store.close()


@pytest.mark.parametrize("server", ["corrupt"], indirect=True)
@pytest.mark.parametrize(
    ("checksum", "kind", "says"),
    [
        ("etag", RetryableError, "was stored with ETag"),  # the engine sends the part again
        ("crc32", PermanentError, "BadDigest"),  # not verified, so sent again with Content-MD5: refused
        ("md5", PermanentError, "BadDigest"),  # the store refused it (as before)
    ],
)
def test_a_part_corrupted_on_the_way_is_never_accepted(
    server: ChecksumS3, checksum: str, kind: type[Exception], says: str
) -> None:
    store = make_store(server.url, "s3://bkt/m", checksum)
    with pytest.raises(kind) as err:
        write(store, "w.bin", DATA, PART)
    assert "s3://bkt/m/w.bin" in str(err.value) and says in str(err.value)
    store.close()


@pytest.mark.parametrize("server", ["kms"], indirect=True)
def test_an_opaque_etag_gets_the_part_again_with_content_md5(server: ChecksumS3) -> None:
    store = make_store(server.url, "s3://bkt/m", "etag")
    write(store, "w.bin", DATA, PART)
    sent = [(n, md5 is not None) for n, _crc, md5 in server.parts]
    assert sent == [(1, False), (1, True), (2, True), (3, True)]  # nothing checked part 1 the first time
    assert store.part_checksum == "md5"
    store.close()


def test_moto_answers_no_crc32_so_parts_fall_back_to_content_md5(moto: MotoS3) -> None:
    client = moto.create_bucket("crc")
    store = make_store(moto.endpoint, "s3://crc/m", "crc32")
    etag = write(store, "w.bin", DATA, PART)
    assert client.get_object(Bucket="crc", Key="m/w.bin")["Body"].read() == DATA
    assert store.part_checksum == "md5"  # moto keeps the header unread (and unanswered) without the SDK's hint
    assert store.stats["upload_part"] == 4  # part 1 twice
    assert etag is not None and etag.endswith("-3")
    store.close()


@pytest.mark.parametrize("server", ["verify"], indirect=True)
def test_crc32_parts_still_know_their_md5_from_the_etag(server: ChecksumS3) -> None:
    # Resumed bucket-to-bucket copies compare part MD5s with the source's multipart ETag.
    store = make_store(server.url, "s3://bkt/m", "crc32")
    upload = store.open_upload("w.bin", len(DATA), PART)
    for index, offset in enumerate(range(0, len(DATA), PART)):
        part = upload.part(index, offset, min(PART, len(DATA) - offset))
        part.write(DATA[offset : offset + PART])
        part.commit()
    for index, offset in enumerate(range(0, len(DATA), PART)):
        assert upload.stored_part_md5(index) == hashlib.md5(DATA[offset : offset + PART]).digest()
    upload.complete()
    assert all(md5 is None for _n, _crc, md5 in server.parts)
    store.close()


@pytest.mark.parametrize("server", ["verify"], indirect=True)
def test_a_resumed_crc32_upload_completes_with_the_crc32_s3_listed_for_earlier_parts(
    server: ChecksumS3, tmp_path: Path
) -> None:
    # AWS refuses to complete an upload created for CRC32 unless every part names its CRC32; the parts
    # of the first run are known only from ListParts.
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "w.bin").write_bytes(DATA)
    settings = TransferSettings(part_size=PART, concurrency=1, retries=1, upload_checksum="crc32", backoff_base=0.01)
    first = make_store(server.url, "s3://bkt/m", "crc32")
    with pytest.raises(RetryableError, match="injected"):
        sync(FlakySource(tmp_path / "src", fail_from=2 * PART), first, settings)
    first.close()
    assert [n for n, _crc, _md5 in server.parts] == [1, 2] and server.aborted == 0
    assert any("/.modelferry/partial/" in key for key in server.objects)  # the resume record

    second = make_store(server.url, "s3://bkt/m", "crc32")
    sync(LocalStore(parse_uri(str(tmp_path / "src")), tmp_path / "src"), second, settings)
    second.close()
    assert [n for n, _crc, _md5 in server.parts] == [1, 2, 3]  # only the missing part went again
    completed = [
        (re.search(r"<PartNumber>(\d+)<", part)[1], (re.search(r"<ChecksumCRC32>([^<]+)<", part) or ["", None])[1])  # type: ignore[index]
        for part in re.findall(r"<Part>(.*?)</Part>", server.completions[0])
    ]
    assert completed == [(str(i + 1), crc32_b64(DATA[o : o + PART])) for i, o in enumerate(range(0, len(DATA), PART))]
    assert server.objects["bkt/m/w.bin"] == DATA
    assert "bkt/m/.modelferry/manifest.json" in server.objects
    assert not any("/.modelferry/partial/" in key for key in server.objects)
