"""Writing one object to S3: a single PutObject, or a multipart upload that can resume.

The flow (buffering, resume records, abort policy) is :class:`ObjectUpload`'s;
this module holds the S3 calls and S3's own checks: every part carries
Content-MD5 and the ETag it comes back with must be that MD5 (except under
SSE-KMS / SSE-C, where the ETag is opaque); one-part objects also carry their
sha256 as user metadata so a later sync can skip them on a strong checksum.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import logging
from typing import Any

from modelferry.checksums import clean_etag
from modelferry.errors import RetryableError
from modelferry.storage.base import Store
from modelferry.storage.object_upload import ObjectUpload
from modelferry.storage.s3_fastwrite import PresignedWriter

log = logging.getLogger(__name__)

SHA256_META = "modelferry-sha256"  # x-amz-meta-modelferry-sha256 on single-part uploads


class S3Calls(Store):
    """What an upload needs of its bucket: calls with errors translated, and aborting an upload."""

    fast_writer: PresignedWriter | None = None  # PUTs on presigned URLs; None: every call through botocore

    @abc.abstractmethod
    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One client call with errors translated, naming the object."""

    @abc.abstractmethod
    def count(self, kind: str) -> None:
        """Count one request of ``kind`` (statistics)."""

    @abc.abstractmethod
    def abort_upload(self, path: str, upload_id: str) -> None:
        """Abort a multipart upload of ``path`` (best effort)."""


class S3Upload(ObjectUpload):
    """One object being written: a single PutObject, or a multipart upload for more than one part."""

    def __init__(self, store: S3Calls, path: str, size: int, part_size: int, fingerprint: str = "") -> None:
        super().__init__(store, path, size, part_size, fingerprint)
        self.store = store
        self.key = store.uri.key(path)
        self.begin()

    def _create(self) -> str:
        resp = self.store.call("create_multipart_upload", self.path, Bucket=self.store.uri.bucket, Key=self.key)
        return str(resp["UploadId"])

    def _put(self, operation: str, data: bytes | bytearray, md5: bytes, **params: Any) -> dict[str, Any]:
        """One PUT with Content-MD5: on a presigned URL when the store offers one, else through botocore.

        The answer as botocore gives it (the keys read here: ETag, ServerSideEncryption, SSECustomerAlgorithm).
        """
        content_md5 = base64.b64encode(md5).decode()
        writer = self.store.fast_writer
        if writer is None:
            return dict(
                self.store.call(
                    operation,
                    self.path,
                    Bucket=self.store.uri.bucket,
                    Key=self.key,
                    Body=data,
                    ContentMD5=content_md5,
                    **params,
                )
            )
        self.store.count(operation)
        headers = {"Content-MD5": content_md5}
        headers.update({f"x-amz-meta-{k}": v for k, v in (params.get("Metadata") or {}).items()})
        got = writer.put(
            operation, {"Key": self.key, "ContentMD5": content_md5, **params}, data, headers, what=self.describe
        )
        out: dict[str, Any] = {"ETag": got.get("ETag"), "ServerSideEncryption": got.get("x-amz-server-side-encryption")}
        if got.get("x-amz-server-side-encryption-customer-algorithm"):
            out["SSECustomerAlgorithm"] = got["x-amz-server-side-encryption-customer-algorithm"]
        return out

    def _send_part(self, index: int, data: bytes | bytearray, md5: bytes) -> str:
        resp = self._put("upload_part", data, md5, UploadId=self.upload_id, PartNumber=index + 1)
        etag = clean_etag(resp.get("ETag"))
        # The server already checked Content-MD5; its ETag is the part's MD5 except under SSE-KMS/SSE-C.
        encrypted = str(resp.get("ServerSideEncryption") or "").startswith("aws:kms") or "SSECustomerAlgorithm" in resp
        if etag != md5.hex() and not encrypted:
            raise RetryableError(
                f"part {index + 1} of {self.describe} was stored with ETag {etag}, expected {md5.hex()}",
                obj=self.describe,
            )
        return str(resp["ETag"])

    def _stored_parts(self, upload_id: str) -> dict[int, tuple[str, int]]:
        parts: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:
            resp = self.store.call(
                "list_parts",
                self.path,
                Bucket=self.store.uri.bucket,
                Key=self.key,
                UploadId=upload_id,
                PartNumberMarker=marker,
            )
            for part in resp.get("Parts") or []:
                parts[int(part["PartNumber"])] = (str(part["ETag"]), int(part["Size"]))
            if not resp.get("IsTruncated"):
                return parts
            marker = int(resp["NextPartNumberMarker"])

    def _commit(self, etags: list[tuple[int, str]]) -> str | None:
        resp = self.store.call(
            "complete_multipart_upload",
            self.path,
            Bucket=self.store.uri.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in etags]},
        )
        return clean_etag(resp.get("ETag"))

    def _put_single(self, data: bytes | bytearray) -> str | None:
        md5 = hashlib.md5(data).digest()  # noqa: S324 - protocol checksum
        resp = self._put("put_object", data, md5, Metadata={SHA256_META: hashlib.sha256(data).hexdigest()})
        return clean_etag(resp.get("ETag"))

    def _abort_id(self, upload_id: str) -> None:
        self.store.abort_upload(self.path, upload_id)
