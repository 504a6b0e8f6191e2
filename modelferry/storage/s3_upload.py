"""Writing one object to S3: a single PutObject, or a multipart upload that can resume.

The flow (buffering, resume records, abort policy) is :class:`ObjectUpload`'s;
this module holds the S3 calls and S3's own checks. Every part carries a
checksum the store verifies before it keeps the body: Content-MD5, after which
the ETag must be that MD5 (except under SSE-KMS / SSE-C, where the ETag is
opaque), or, where the store verifies it (``upload_checksum``: AWS S3 by
default), ``x-amz-checksum-crc32``, which costs about a fifth of the CPU per
byte and must come back unchanged in the answer. A store that answers without
it ignored it: that part is sent again with Content-MD5 and the store keeps MD5
for the rest of the run (decided once per endpoint). One-part objects also carry
their sha256 as user metadata so a later sync can skip them on a strong checksum.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import logging
import zlib
from typing import Any
from urllib.parse import urlsplit

from modelferry.checksums import clean_etag
from modelferry.errors import RetryableError
from modelferry.storage.base import Store
from modelferry.storage.object_upload import ObjectUpload
from modelferry.storage.s3_fastwrite import PresignedWriter

log = logging.getLogger(__name__)

SHA256_META = "modelferry-sha256"  # x-amz-meta-modelferry-sha256 on single-part uploads
HEADERS = {"ContentMD5": "Content-MD5", "ChecksumCRC32": "x-amz-checksum-crc32"}  # parameter -> signed header


def choose_part_checksum(setting: str, endpoint: str | None) -> str:
    """``md5``, ``etag`` or ``crc32``: what parts sent to ``endpoint`` carry (``auto``: crc32 on AWS S3, else etag).

    AWS S3 verifies ``x-amz-checksum-crc32`` and refuses a body that does not match; other stores
    may ignore it (rclone's, moto). Every store answers a part's MD5 as its ETag (unless encrypted),
    which ``etag`` checks without making the store verify a Content-MD5 too (rclone's hashes the
    body twice for that).
    """
    if setting != "auto":
        return setting
    host = (urlsplit(endpoint).hostname or "") if endpoint else "s3.amazonaws.com"
    return "crc32" if host == "amazonaws.com" or host.endswith(".amazonaws.com") else "etag"


def _encrypted(resp: dict[str, Any]) -> bool:
    """Whether the answer's ETag is opaque (SSE-KMS, SSE-C) rather than the body's MD5."""
    return str(resp.get("ServerSideEncryption") or "").startswith("aws:kms") or "SSECustomerAlgorithm" in resp


def crc32_b64(data: bytes | bytearray | memoryview) -> str:
    """The x-amz-checksum-crc32 value of ``data`` (big-endian CRC32, base64)."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


class S3Calls(Store):
    """What an upload needs of its bucket: calls with errors translated, and aborting an upload."""

    fast_writer: PresignedWriter | None = None  # PUTs on presigned URLs; None: every call through botocore
    part_checksum = "md5"  # or "crc32" where the store verifies it; falls back to md5 when it does not

    @property
    @abc.abstractmethod
    def endpoint_name(self) -> str:
        """The endpoint in words, for messages."""

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
        self._crcs: dict[int, str] = {}  # index -> CRC32 the store answered (crc32 uploads list them on completion)
        self.begin()

    def _create(self) -> str:
        # AWS refuses parts with a checksum the upload was not created for, and completes such an
        # upload only with every part's checksum.
        extra = {"ChecksumAlgorithm": "CRC32"} if self.store.part_checksum == "crc32" else {}
        resp = self.store.call(
            "create_multipart_upload", self.path, Bucket=self.store.uri.bucket, Key=self.key, **extra
        )
        return str(resp["UploadId"])

    def _put(self, operation: str, data: bytes | bytearray, checksum: dict[str, str], **params: Any) -> dict[str, Any]:
        """One PUT with ``checksum`` (ContentMD5 or ChecksumCRC32, base64): on a presigned URL when
        the store offers one, else through botocore.

        The answer as botocore gives it (the keys read here: ETag, ChecksumCRC32, ServerSideEncryption,
        SSECustomerAlgorithm).
        """
        writer = self.store.fast_writer
        if writer is None:
            return dict(
                self.store.call(
                    operation, self.path, Bucket=self.store.uri.bucket, Key=self.key, Body=data, **checksum, **params
                )
            )
        self.store.count(operation)
        headers = {HEADERS[k]: v for k, v in checksum.items()}
        headers.update({f"x-amz-meta-{k}": v for k, v in (params.get("Metadata") or {}).items()})
        got = writer.put(operation, {"Key": self.key, **checksum, **params}, data, headers, what=self.describe)
        out: dict[str, Any] = {
            "ETag": got.get("ETag"),
            "ChecksumCRC32": got.get("x-amz-checksum-crc32"),
            "ServerSideEncryption": got.get("x-amz-server-side-encryption"),
        }
        if got.get("x-amz-server-side-encryption-customer-algorithm"):
            out["SSECustomerAlgorithm"] = got["x-amz-server-side-encryption-customer-algorithm"]
        return out

    def _part_md5(self, data: bytes | bytearray) -> bytes | None:
        return None if self.store.part_checksum == "crc32" else super()._part_md5(data)

    def _send_part(self, index: int, data: bytes | bytearray, md5: bytes | None) -> str:
        number = index + 1
        if md5 is None:  # crc32
            etag = self._send_crc32(index, data)
            if etag is not None:
                return etag
            md5 = hashlib.md5(data).digest()  # noqa: S324 - the same part again, with the checksum it verifies
        elif self.store.part_checksum == "etag":
            resp = self._put("upload_part", data, {}, UploadId=self.upload_id, PartNumber=number)
            if not _encrypted(resp):
                self._check_etag(number, resp, md5)  # the store's MD5 of the bytes it kept must be ours
                return str(resp["ETag"])
            # An opaque ETag (SSE-KMS / SSE-C) checked nothing: this part again, with Content-MD5.
            self._fall_back("answers opaque ETags (encryption)")
        resp = self._put(
            "upload_part",
            data,
            {"ContentMD5": base64.b64encode(md5).decode()},
            UploadId=self.upload_id,
            PartNumber=number,
        )
        # The server already checked Content-MD5; its ETag is the part's MD5 except under SSE-KMS/SSE-C.
        if not _encrypted(resp):
            self._check_etag(number, resp, md5)
        return str(resp["ETag"])

    def _send_crc32(self, index: int, data: bytes | bytearray) -> str | None:
        """Send part ``index`` with its CRC32; its ETag, or None when the store did not verify it."""
        crc = crc32_b64(data)
        resp = self._put("upload_part", data, {"ChecksumCRC32": crc}, UploadId=self.upload_id, PartNumber=index + 1)
        answered = resp.get("ChecksumCRC32")
        if answered == crc:  # the store computed it over the body it kept (AWS refuses a mismatch itself)
            with self._lock:
                self._crcs[index] = crc
            return str(resp["ETag"])
        if answered:
            raise RetryableError(
                f"part {index + 1} of {self.describe} was stored with CRC32 {answered}, expected {crc}",
                obj=self.describe,
            )
        self._fall_back("does not verify x-amz-checksum-crc32 (no checksum in its answer)")
        return None

    def _fall_back(self, why: str) -> None:
        """Send parts to this endpoint with Content-MD5 from now on (once per store and run)."""
        if self.store.part_checksum != "md5":
            self.store.part_checksum = "md5"
            log.warning(
                "%s %s: parts go with Content-MD5 from now on (MODELFERRY_TRANSFER__UPLOAD_CHECKSUM=md5 skips this)",
                self.store.endpoint_name,
                why,
            )

    def _check_etag(self, number: int, resp: dict[str, Any], md5: bytes) -> None:
        etag = clean_etag(resp.get("ETag"))
        if etag != md5.hex():
            raise RetryableError(
                f"part {number} of {self.describe} was stored with ETag {etag}, expected {md5.hex()}", obj=self.describe
            )

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
                if part.get("ChecksumCRC32"):  # a resumed crc32 upload completes with these
                    with self._lock:
                        self._crcs[int(part["PartNumber"]) - 1] = str(part["ChecksumCRC32"])
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
            MultipartUpload={"Parts": [self._completed_part(n, e) for n, e in etags]},
        )
        return clean_etag(resp.get("ETag"))

    def _completed_part(self, number: int, etag: str) -> dict[str, Any]:
        with self._lock:
            crc = self._crcs.get(number - 1)
        return {"PartNumber": number, "ETag": etag, **({"ChecksumCRC32": crc} if crc else {})}

    def _put_single(self, data: bytes | bytearray) -> str | None:
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - protocol checksum
        meta = {SHA256_META: hashlib.sha256(data).hexdigest()}
        resp = self._put("put_object", data, {"ContentMD5": md5}, Metadata=meta)
        return clean_etag(resp.get("ETag"))

    def _abort_id(self, upload_id: str) -> None:
        self.store.abort_upload(self.path, upload_id)
