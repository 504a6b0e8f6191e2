"""S3-compatible object stores (AWS, MinIO, Ceph, ODF, IBM COS with HMAC keys) via boto3.

Retries belong to the engine (it sees every part and backs off with jitter), so
botocore retries are kept to one extra attempt. Listing is paginated and the
prefix is matched at a directory boundary. Uploads (:mod:`.s3_upload`) buffer one
part in memory (the engine accounts for it) and have every part verified (a
checksum the store checks, or the ETag it answers: ``upload_checksum``); a multipart upload is kept for the next run on a retryable
failure or SIGTERM and aborted on any other (see :mod:`.object_upload`).
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import boto3
import botocore.session
from botocore.config import Config

from modelferry.checksums import clean_etag
from modelferry.errors import ModelferryError, NotFoundError, RetryableError
from modelferry.logs import register_secret
from modelferry.settings import MiB, S3Credentials, TLSSettings, TransferSettings
from modelferry.storage.base import PARTIAL_DIR, FileSink, InPlace, ObjectInfo, Store, StoreFeatures, Upload
from modelferry.storage.http import RangedHTTPClient, read_arrived
from modelferry.storage.s3_config import (
    b64_to_hex_any,
    client_config,
    etag_md5,
    fast_timestamp,
    resolve_endpoint,
    s3_tls,
)
from modelferry.storage.s3_errors import BucketNotFoundError, translate
from modelferry.storage.s3_fastread import PresignedReader
from modelferry.storage.s3_fastwrite import PresignedWriter
from modelferry.storage.s3_listing import list_pages
from modelferry.storage.s3_upload import SHA256_META, S3Calls, S3Upload, choose_part_checksum
from modelferry.storage.upload_journal import drop_records, record_stems, stale_record
from modelferry.uri import StorageURI

__all__ = ["S3Store"]

log = logging.getLogger(__name__)

READ_CHUNK = MiB
MIN_PART = 5 * MiB
MAX_PARTS = 10_000
COPY_LIMIT = 5 * (1 << 30)  # CopyObject handles up to 5 GiB; UploadPartCopy above


class S3Store(S3Calls):
    """A bucket prefix on an S3-compatible endpoint, usable as source and target."""

    features = StoreFeatures(min_part_size=MIN_PART, max_parts=MAX_PARTS, server_side_copy=True)
    page_size = 1000
    copy_limit = COPY_LIMIT

    def __init__(
        self,
        uri: StorageURI,
        creds: S3Credentials,
        transfer: TransferSettings,
        *,
        endpoint_url: str | None = None,
        identity_key: str | None = None,
        before_send: Callable[..., Any] | None = None,
        tls: TLSSettings | None = None,
    ) -> None:
        self.uri = uri
        self.tls = s3_tls(creds, tls)  # one trust for listing, ranged reads and uploads
        self.creds = creds
        self.transfer = transfer
        self.endpoint = endpoint_url or resolve_endpoint(creds)
        self.part_checksum = choose_part_checksum(transfer.upload_checksum, self.endpoint)
        self.stats: collections.Counter[str] = collections.Counter()  # requests by kind (tests, debugging)
        self._stats_lock = threading.Lock()
        secret = creds.secret_access_key.get_secret_value() if creds.secret_access_key else None
        token = creds.session_token.get_secret_value() if creds.session_token else None
        register_secret(secret)
        register_secret(token)
        try:
            core = botocore.session.get_session()
            # Listings carry a LastModified per object; dateutil's parser cost ~0.1 ms each.
            core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=fast_timestamp)
            session = boto3.session.Session(
                botocore_session=core,
                profile_name=creds.profile,
                aws_access_key_id=creds.access_key_id if creds.access_key_id and secret else None,
                aws_secret_access_key=secret if creds.access_key_id else None,
                aws_session_token=token if creds.access_key_id else None,
            )
            self.client: Any = session.client(
                "s3",
                endpoint_url=self.endpoint,
                config=client_config(creds, transfer, self.endpoint, unsigned=before_send is not None),
                verify=self.tls.verify_arg(),
            )
        except Exception as exc:
            raise translate(exc, bucket=uri.bucket, what=str(uri), endpoint=self.endpoint_name, tls=self.tls) from exc
        if before_send is not None:
            self.client.meta.events.register("before-send.s3", before_send)
        # Presigned URLs + the urllib3 socket fast path; not for bearer-token (COS IAM) mode, which
        # signs each request in before_send and cannot be presigned.
        self.fast_reader: PresignedReader | None = None
        if before_send is None:
            self._http = RangedHTTPClient(
                connect_timeout=transfer.connect_timeout,
                stall_timeout=transfer.stall_timeout,
                pool_size=transfer.concurrency,
                tls=self.tls,
                speed=(transfer.speed_limit, transfer.speed_time),
            )
            presigner: Any = self.client
            if not creds.anonymous:
                # boto3 presigns with legacy SigV2 on custom endpoints; SigV4 is what every S3 store accepts.
                sigv4 = Config(signature_version="s3v4")
                presigner = session.client(
                    "s3",
                    endpoint_url=self.endpoint,
                    config=client_config(creds, transfer, self.endpoint, unsigned=False).merge(sigv4),
                    verify=self.tls.verify_arg(),
                )
            self.fast_reader = PresignedReader(presigner, uri.bucket, self._http)
            self.fast_writer = PresignedWriter(
                presigner,
                uri.bucket,
                self._http,
                endpoint=self.endpoint_name,
                backoff=(transfer.backoff_base, transfer.backoff_max),
            )
        access_key = creds.access_key_id or os.environ.get("AWS_ACCESS_KEY_ID") or ""
        self._identity = identity_key or (
            f"s3:{self.endpoint or 'aws'}|{access_key}|{creds.profile or ''}|{'anon' if creds.anonymous else ''}"
        )

    @property
    def endpoint_name(self) -> str:
        return self.endpoint or "AWS S3"

    def identity(self) -> str:
        return self._identity

    def count(self, kind: str) -> None:
        """Count one request of ``kind`` (worker threads share the counter)."""
        with self._stats_lock:
            self.stats[kind] += 1

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One client call with errors translated, naming the object."""
        self.count(method)
        try:
            return getattr(self.client, method)(**kwargs)
        except Exception as exc:
            raise translate(
                exc, bucket=self.uri.bucket, what=self.describe(path), endpoint=self.endpoint_name, tls=self.tls
            ) from exc

    # -- reading --------------------------------------------------------------

    def resolve(self) -> None:
        self.count("head_bucket")
        try:
            self.client.head_bucket(Bucket=self.uri.bucket)
        except Exception as exc:
            # HeadBucket answers a bare 404 without a code: name the bucket, not the prefix.
            raise translate(
                exc, bucket=self.uri.bucket, what=f"s3://{self.uri.bucket}", endpoint=self.endpoint_name, tls=self.tls
            ) from exc

    def _list_prefix(self) -> str:
        # A directory boundary: s3://b/model lists model/..., never model-hf/...
        return f"{self.uri.prefix}/" if self.uri.prefix else ""

    def list(self) -> Iterator[ObjectInfo]:
        """Every object under the prefix, a page at a time as the listing arrives (see :func:`list_pages`)."""
        return list_pages(self, self._list_prefix())

    def head_details(self, info: ObjectInfo) -> ObjectInfo:
        kwargs: dict[str, Any] = {"Bucket": self.uri.bucket, "Key": self.uri.key(info.path), "ChecksumMode": "ENABLED"}
        if info.multipart_count:
            kwargs["PartNumber"] = 1
        head = self.call("head_object", info.path, **kwargs)
        return self._from_head(info.path, head, info)

    def _from_head(self, path: str, head: dict[str, Any], base: ObjectInfo | None = None) -> ObjectInfo:
        # A HEAD of part 1 answers with that part's ETag: keep the object's own from the listing.
        etag = base.etag if base is not None else clean_etag(head.get("ETag"))
        size = base.size if base is not None else int(head.get("ContentLength", 0))
        part_size = None
        if base is not None and base.multipart_count and head.get("PartsCount"):
            part_size = int(head.get("ContentLength", 0)) or None
        sha256 = (head.get("Metadata") or {}).get(SHA256_META)
        checksum = head.get("ChecksumSHA256")
        if checksum and head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT" and "-" not in str(checksum):
            sha256 = b64_to_hex_any(str(checksum)) or sha256
        return ObjectInfo(
            path=path,
            size=size,
            etag=etag,
            md5=etag_md5(etag),
            part_size=part_size,
            sha256=sha256.lower() if sha256 and len(sha256) == 64 else None,
            version=head.get("VersionId"),
        )

    def stat(self, path: str) -> ObjectInfo | None:
        try:
            head = self.call("head_object", path, Bucket=self.uri.bucket, Key=self.uri.key(path))
        except NotFoundError as exc:
            if isinstance(exc, BucketNotFoundError):
                raise
            return None
        info = self._from_head(path, head)
        if info.etag and ObjectInfo(path=path, size=info.size, etag=info.etag).multipart_count:
            return self.head_details(info)
        return info

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        if length <= 0:
            return
        self.count("ranged_get")
        if self.fast_reader is not None:
            etag = info.etag if info is not None else None
            yield from self.fast_reader.read(self.uri.key(path), start, length, etag=etag, what=self.describe(path))
            return
        kwargs: dict[str, Any] = {
            "Bucket": self.uri.bucket,
            "Key": self.uri.key(path),
            "Range": f"bytes={start}-{start + length - 1}",
        }
        if info is not None and info.etag:
            kwargs["IfMatch"] = f'"{info.etag}"'  # fail fast if the object is replaced mid-copy
        resp = self.call("get_object", path, **kwargs)
        body = resp["Body"]
        try:
            yield from _arrived_chunks(body)
        except Exception as exc:
            raise translate(
                exc, bucket=self.uri.bucket, what=self.describe(path), endpoint=self.endpoint_name, tls=self.tls
            ) from exc
        finally:
            body.close()

    def read_into(
        self, path: str, start: int, length: int, sink: FileSink, *, info: ObjectInfo | None = None
    ) -> Iterable[bytes | InPlace]:
        if self.fast_reader is None or length <= 0:
            return self.read(path, start, length, info=info)
        self.count("ranged_get")
        etag = info.etag if info is not None else None
        return self.fast_reader.read_into(self.uri.key(path), start, length, sink, etag=etag, what=self.describe(path))

    def read_bytes(self, path: str) -> bytes | None:
        try:
            resp = self.call("get_object", path, Bucket=self.uri.bucket, Key=self.uri.key(path))
        except NotFoundError as exc:
            if isinstance(exc, BucketNotFoundError):
                raise
            return None
        try:
            return bytes(resp["Body"].read())
        except Exception as exc:
            raise translate(
                exc, bucket=self.uri.bucket, what=self.describe(path), endpoint=self.endpoint_name, tls=self.tls
            ) from exc

    # -- writing --------------------------------------------------------------

    def open_upload(self, path: str, size: int, part_size: int, *, fingerprint: str = "") -> Upload:
        return S3Upload(self, path, size, part_size, fingerprint)

    def put_bytes(self, path: str, data: bytes) -> None:
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - protocol checksum
        self.call("put_object", path, Bucket=self.uri.bucket, Key=self.uri.key(path), Body=data, ContentMD5=md5)

    def delete(self, path: str) -> None:
        self.call("delete_object", path, Bucket=self.uri.bucket, Key=self.uri.key(path))

    def copy_within(self, source: Store, src: ObjectInfo, target_path: str, part_size: int) -> str | None:
        """CopyObject up to 5 GiB, UploadPartCopy above; the bytes never leave the store."""
        if not isinstance(source, S3Store):
            raise RetryableError("server-side copy needs an S3 source", obj=self.describe(target_path))
        copy_source = {"Bucket": source.uri.bucket, "Key": source.uri.key(src.path)}
        key = self.uri.key(target_path)
        if src.size < self.copy_limit:
            resp = self.call("copy_object", target_path, Bucket=self.uri.bucket, Key=key, CopySource=copy_source)
            return clean_etag((resp.get("CopyObjectResult") or {}).get("ETag"))
        return self._multipart_copy(copy_source, src, target_path, key, part_size)

    def _multipart_copy(
        self, copy_source: dict[str, str], src: ObjectInfo, target_path: str, key: str, part_size: int
    ) -> str | None:
        part_size = max(part_size, MIN_PART, -(-src.size // MAX_PARTS))
        ranges = [(off, min(off + part_size, src.size) - 1) for off in range(0, src.size, part_size)]
        upload_id = self.call("create_multipart_upload", target_path, Bucket=self.uri.bucket, Key=key)["UploadId"]

        def copy_part(n: int) -> dict[str, Any]:
            first, last = ranges[n]
            resp = self.call(
                "upload_part_copy",
                target_path,
                Bucket=self.uri.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=n + 1,
                CopySource=copy_source,
                CopySourceRange=f"bytes={first}-{last}",
            )
            return {"PartNumber": n + 1, "ETag": resp["CopyPartResult"]["ETag"]}

        try:
            with concurrent.futures.ThreadPoolExecutor(min(len(ranges), self.transfer.concurrency)) as pool:
                parts = list(pool.map(copy_part, range(len(ranges))))
            resp = self.call(
                "complete_multipart_upload",
                target_path,
                Bucket=self.uri.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            self.abort_upload(target_path, upload_id)
            raise
        return clean_etag(resp.get("ETag"))

    def abort_upload(self, path: str, upload_id: str) -> None:
        """Abort a multipart upload of ``path`` (best effort: a leftover only costs storage until cleared)."""
        try:
            self.call(
                "abort_multipart_upload", path, Bucket=self.uri.bucket, Key=self.uri.key(path), UploadId=upload_id
            )
        except NotFoundError:
            log.debug("the multipart upload of %s was already gone", self.describe(path))
        except ModelferryError as exc:
            log.warning("could not abort the multipart upload of %s: %s", self.describe(path), exc)

    def cleanup_partials(self, keep: Iterable[str] | None = None, *, older_than: float | None = None) -> None:
        """Abort the multipart uploads whose resume record belongs to no file of the finished plan.

        Records written at or after ``older_than`` (this run's start) are left alone: they may
        belong to a concurrent run. Cleanup never fails a sync; problems are logged.
        """
        if keep is None:
            return
        root = self._list_prefix()
        paginator = self.client.get_paginator("list_objects_v2")

        try:
            records = [
                (str(obj["Key"]), obj["LastModified"].timestamp())
                for page in paginator.paginate(Bucket=self.uri.bucket, Prefix=f"{root}{PARTIAL_DIR}/")
                for obj in page.get("Contents", []) or []
            ]
            if not records:
                return  # the usual case: ``keep`` (maybe a million paths) is never read
            wanted = record_stems(keep)
            stale = [
                key[len(root) :]
                for key, modified in records
                if stale_record(key, wanted) and (older_than is None or modified < older_than)
            ]
            drop_records(self, stale, self.abort_upload)
        except Exception as exc:
            log.warning("could not clean up unfinished uploads under %s: %s", self.describe(PARTIAL_DIR), exc)

    def interrupt(self) -> None:
        """Wake threads blocked in fast-path reads (cancellation on SIGTERM)."""
        if self.fast_reader is not None:
            self._http.interrupt()

    def close(self) -> None:
        if self.fast_reader is not None:
            self._http.close()
        self.client.close()


def _arrived_chunks(body: Any) -> Iterator[bytes]:
    """A botocore body in chunks of what has arrived (so a trickle reaches the low-speed check).

    botocore's own ``iter_chunks`` waits for whole chunks; its urllib3 response can hand out what it
    has. Content-Length is checked by the caller (the part must be exactly as long as asked).
    """
    raw = getattr(body, "_raw_stream", None)
    if raw is None or not hasattr(raw, "read1"):
        yield from body.iter_chunks(READ_CHUNK)
        return
    while chunk := read_arrived(raw.read1, READ_CHUNK):
        yield chunk
