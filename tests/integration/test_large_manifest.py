"""Manifests of any size: written a part at a time, read entry by entry, and what a failure means.

Real stores: a local directory and moto S3 (a manifest over 8 MiB goes up as a multipart upload and
comes back through ranged reads). The reader parses any JSON layout of the document, in chunks of
any size; a store that fails while it streams fails the sync (a retryable error is not mistaken
for an unreadable manifest), while a document that is not a manifest only costs re-verification.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelferry.errors import PermanentError, RetryableError
from modelferry.settings import S3Credentials, TransferSettings
from modelferry.storage.base import MANIFEST_NAME, ObjectInfo
from modelferry.storage.local import LocalStore
from modelferry.storage.s3 import S3Store
from modelferry.transfer.index import TreeIndex
from modelferry.transfer.listing import load_manifest
from modelferry.transfer.manifest import (
    SPOOL_PART,
    Manifest,
    ManifestEntry,
    iter_manifest,
    write_manifest_entries,
)
from modelferry.uri import parse_uri
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, MotoS3, shared_servers

pytestmark = pytest.mark.integration

SHA = "ab" * 32


def entries(count: int) -> Iterator[ManifestEntry]:
    for n in range(count):
        yield ManifestEntry(path=f"d{n // 1000:04d}/f{n:07d}.bin", size=n, sha256=SHA, source_etag=f"e{n}")


def header() -> dict[str, object]:
    return Manifest(source="hf://org/model", revision="c0ffee").header()


@pytest.fixture
def moto() -> Iterator[MotoS3]:
    first, _ = shared_servers()
    first.reset()
    yield first
    first.reset()


def test_iter_manifest_reads_any_layout_in_any_chunks() -> None:
    files = list(entries(50))
    ours = Manifest(source="s", revision="r", files=files).to_json()
    theirs = json.dumps(
        {"files": [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in files], "version": 1, "source": "s"}
    ).encode()  # files first, no newlines: another writer's layout
    for data in (ours, theirs):
        for size in (1, 7, 4096):
            got: dict[str, object] = {}
            read = list(iter_manifest([data[i : i + size] for i in range(0, len(data), size)], got))
            assert [(e.path, e.size, e.sha256) for e in read] == [(e.path, e.size, e.sha256) for e in files]
            assert got["source"] == "s"
    assert json.loads(ours)["total_size"] == sum(e.size for e in files)


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b'{"version": 1}', b'{"files": [{"path": "a"}]}', b'{"files": [{"path": "a", "size": 1}', b"\xff{"],
    ids=["empty", "not-an-object", "no-files", "no-size", "truncated", "not-utf8"],
)
def test_iter_manifest_refuses_what_is_not_a_manifest(data: bytes) -> None:
    with pytest.raises(PermanentError, match="unreadable manifest"):
        list(iter_manifest([data], {}))


def large_count() -> int:
    """Enough entries for a manifest over one spool part (multipart on a bucket)."""
    per_entry = len(Manifest(source="s", revision="r", files=list(entries(1))).to_json()) - 150
    return SPOOL_PART // max(per_entry, 40) + 5_000


def round_trip(store: LocalStore | S3Store, count: int) -> TreeIndex:
    write_manifest_entries(store, header(), entries(count), total_size=sum(range(count)))
    index = TreeIndex()
    seen = store.stat(MANIFEST_NAME)
    assert seen is not None and seen.size > SPOOL_PART
    assert load_manifest(store, seen, index, "tman")
    return index


def test_a_large_manifest_round_trips_through_a_directory(tmp_path: Path) -> None:
    count = large_count()
    store = LocalStore(parse_uri(str(tmp_path)), tmp_path)
    with round_trip(store, count) as index:
        assert index.count("tman") == count
        assert index.lookup("tman", "d0001/f0001234.bin") == (
            "d0001/f0001234.bin",
            1234,
            SHA,
            None,
            "e1234",
            None,
            None,
        )
    body = json.loads((tmp_path / MANIFEST_NAME).read_bytes())  # still one ordinary JSON document
    assert len(body["files"]) == count and body["revision"] == "c0ffee"
    assert not list((tmp_path / ".modelferry").glob("partial/*"))


def test_a_large_manifest_round_trips_through_a_bucket(moto: MotoS3) -> None:
    moto.create_bucket("manifests")
    creds = S3Credentials(endpoint_url=moto.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)
    store = S3Store(parse_uri("s3://manifests/model"), creds, TransferSettings(concurrency=4))
    count = large_count()
    with round_trip(store, count) as index:
        assert index.count("tman") == count
    assert store.stats["create_multipart_upload"] == 1  # a part at a time, never the whole document in one call


class FailingRead(LocalStore):
    """A directory whose reads fail half-way (a reset connection, a bad disk) while the manifest streams."""

    error: Exception = RetryableError("connection reset")

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterator[bytes]:
        chunks = iter(super().read(path, start, length, info=info))
        yield next(chunks)
        raise self.error


@pytest.mark.parametrize(
    "error", [RetryableError("connection reset"), PermanentError("input/output error")], ids=["retryable", "permanent"]
)
def test_a_store_failing_mid_manifest_fails_instead_of_forgetting_the_manifest(
    tmp_path: Path, error: Exception
) -> None:
    count = large_count()
    write_manifest_entries(LocalStore(parse_uri(str(tmp_path)), tmp_path), header(), entries(count), total_size=0)
    store = FailingRead(parse_uri(str(tmp_path)), tmp_path)
    store.error = error
    with TreeIndex() as index, pytest.raises(type(error), match=str(error)):
        load_manifest(store, None, index, "tman")


def test_an_unreadable_manifest_means_verify_again(tmp_path: Path) -> None:
    (tmp_path / ".modelferry").mkdir()
    (tmp_path / MANIFEST_NAME).write_text('{"files": [{"path": "a", "size": 1}, {"path": ')
    store = LocalStore(parse_uri(str(tmp_path)), tmp_path)
    with TreeIndex() as index:
        assert load_manifest(store, None, index, "tman")  # there (to be withdrawn before changes) ...
        assert index.count("tman") == 0  # ... but nothing in it is trusted
