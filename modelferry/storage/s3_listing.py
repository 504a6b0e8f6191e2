"""Listing an S3 prefix as it pages in (a million-object prefix never sits in memory whole)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any, Protocol

from modelferry.checksums import clean_etag
from modelferry.settings import TransferSettings
from modelferry.storage.base import ObjectInfo
from modelferry.storage.s3_config import etag_md5
from modelferry.storage.s3_errors import translate
from modelferry.uri import StorageURI


class ListedStore(Protocol):
    """What a listing needs of the S3 store."""

    client: Any
    uri: StorageURI
    page_size: int
    transfer: TransferSettings
    tls: Any

    @property
    def endpoint_name(self) -> str: ...

    def count(self, kind: str) -> None: ...

    def head_details(self, info: ObjectInfo) -> ObjectInfo: ...


def list_pages(store: ListedStore, prefix: str) -> Iterator[ObjectInfo]:
    """Every object under the prefix, a page at a time as the listing arrives (in the store's key order).

    Objects whose checksum needs a HEAD (multipart: part 1 gives the part size; a stored
    sha256) are completed in parallel, page by page; the rest pass straight through.
    """
    paginator = store.client.get_paginator("list_objects_v2")
    pages = iter(
        paginator.paginate(Bucket=store.uri.bucket, Prefix=prefix, PaginationConfig={"PageSize": store.page_size})
    )
    pool: concurrent.futures.ThreadPoolExecutor | None = None
    try:
        while True:
            try:
                page = next(pages, None)
            except Exception as exc:
                raise translate(
                    exc, bucket=store.uri.bucket, what=str(store.uri), endpoint=store.endpoint_name, tls=store.tls
                ) from exc
            if page is None:
                return
            store.count("list_objects_v2")
            infos: list[tuple[ObjectInfo, bool]] = []
            for obj in page.get("Contents", []) or []:
                rel = str(obj["Key"])[len(prefix) :]
                if not rel or rel.endswith("/"):
                    continue  # the prefix itself or a "directory" marker
                info = ObjectInfo(
                    path=rel,
                    size=int(obj["Size"]),
                    etag=clean_etag(obj.get("ETag")),
                    md5=etag_md5(obj.get("ETag")),
                )
                infos.append((info, bool(info.multipart_count or "SHA256" in (obj.get("ChecksumAlgorithm") or []))))
            if not any(needs for _, needs in infos):
                yield from (info for info, _ in infos)
                continue
            if pool is None:
                pool = concurrent.futures.ThreadPoolExecutor(store.transfer.concurrency, thread_name_prefix="s3-head")
            yield from pool.map(lambda pair: store.head_details(pair[0]) if pair[1] else pair[0], infos)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
