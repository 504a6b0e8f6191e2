"""Writing one object to S3: a single PutObject, or a multipart upload aborted on any failure."""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from typing import TYPE_CHECKING

from modelferry.errors import ModelferryError, RetryableError
from modelferry.storage.base import PartWriter, Upload
from modelferry.storage.buffered_part import BufferedPart
from modelferry.transfer.verify import clean_etag

if TYPE_CHECKING:
    from modelferry.storage.s3 import S3Store

log = logging.getLogger(__name__)

SHA256_META = "modelferry-sha256"  # x-amz-meta-modelferry-sha256 on single-part uploads


class S3Upload(Upload):
    """One object being written: a single PutObject, or a multipart upload for more than one part."""

    buffers_parts = True

    def __init__(self, store: S3Store, path: str, size: int, part_size: int) -> None:
        self.store = store
        self.path = path
        self.size = size
        self.part_size = part_size
        self.key = store.uri.key(path)
        self.describe = store.describe(path)
        self.parts_total = max(1, -(-size // part_size)) if size else 1
        self.multipart = self.parts_total > 1
        self._lock = threading.Lock()
        self._etags: dict[int, str] = {}
        self._single: bytes | bytearray | None = None
        self.upload_id: str | None = None
        if self.multipart:
            resp = store.call("create_multipart_upload", path, Bucket=store.uri.bucket, Key=self.key)
            self.upload_id = str(resp["UploadId"])

    def part(self, index: int, offset: int, length: int) -> PartWriter:
        return BufferedPart(self, index, length)

    def commit_part(self, index: int, data: bytes | bytearray) -> None:
        if not self.multipart:
            self._single = data  # sent on complete(), after the engine verified the bytes
            return
        digest = hashlib.md5(data).digest()  # noqa: S324 - Content-MD5 is the protocol's checksum
        resp = self.store.call(
            "upload_part",
            self.path,
            Bucket=self.store.uri.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=index + 1,
            Body=data,
            ContentMD5=base64.b64encode(digest).decode(),
        )
        etag = clean_etag(resp.get("ETag"))
        # The server already checked Content-MD5; its ETag is the part's MD5 except under SSE-KMS/SSE-C.
        encrypted = str(resp.get("ServerSideEncryption", "")).startswith("aws:kms") or "SSECustomerAlgorithm" in resp
        if etag != digest.hex() and not encrypted:
            raise RetryableError(
                f"part {index + 1} of {self.describe} was stored with ETag {etag}, expected {digest.hex()}",
                obj=self.describe,
            )
        with self._lock:
            self._etags[index] = str(resp["ETag"])

    def complete(self) -> str | None:
        if not self.multipart:
            data = self._single if self._single is not None else b""
            meta = {SHA256_META: hashlib.sha256(data).hexdigest()}
            md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - protocol checksum
            resp = self.store.call(
                "put_object",
                self.path,
                Bucket=self.store.uri.bucket,
                Key=self.key,
                Body=data,
                ContentMD5=md5,
                Metadata=meta,
            )
            self._single = None
            return clean_etag(resp.get("ETag"))
        with self._lock:
            parts = [{"PartNumber": i + 1, "ETag": self._etags[i]} for i in sorted(self._etags)]
        if len(parts) != self.parts_total:
            raise RetryableError(
                f"{self.describe}: {len(parts)} of {self.parts_total} parts uploaded", obj=self.describe
            )
        resp = self.store.call(
            "complete_multipart_upload",
            self.path,
            Bucket=self.store.uri.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
        )
        self.upload_id = None
        return clean_etag(resp.get("ETag"))

    def abort(self, *, keep_partial: bool = False) -> None:
        # Parts of an unfinished multipart upload are billed and invisible: never leave them behind.
        self._single = None
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is None:
            return
        try:
            self.store.call(
                "abort_multipart_upload", self.path, Bucket=self.store.uri.bucket, Key=self.key, UploadId=upload_id
            )
        except ModelferryError as exc:
            log.warning("could not abort the multipart upload of %s: %s", self.describe, exc)
