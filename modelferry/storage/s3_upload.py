"""Writing one object to S3: a single PutObject, or a multipart upload that can resume.

A multipart upload records its progress in an :class:`UploadJournal` in the
target prefix. A run stopped by a retryable error or SIGTERM keeps the upload
and its record; a run killed outright leaves them as they were at the last
write. The next run with the same source version checks the record against
``ListParts`` and carries on after the last recorded part, with the hash state
saved there; anything that does not match starts over and aborts the old upload.
Failures that will not be retried (a checksum mismatch, a permanent error) abort
the upload, since unfinished parts are billed and invisible.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from typing import TYPE_CHECKING

from modelferry import hashstate
from modelferry.errors import ModelferryError, NotFoundError, RetryableError
from modelferry.hashstate import HashCheckpoint
from modelferry.storage.base import PartWriter, Upload
from modelferry.storage.buffered_part import BufferedPart
from modelferry.storage.upload_journal import ResumeRecord, UploadJournal
from modelferry.transfer.verify import clean_etag

if TYPE_CHECKING:
    from modelferry.storage.s3 import S3Store

log = logging.getLogger(__name__)

SHA256_META = "modelferry-sha256"  # x-amz-meta-modelferry-sha256 on single-part uploads


class S3Upload(Upload):
    """One object being written: a single PutObject, or a multipart upload for more than one part."""

    buffers_parts = True

    def __init__(self, store: S3Store, path: str, size: int, part_size: int, fingerprint: str = "") -> None:
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
        self._md5s: dict[int, bytes] = {}
        self._single: bytes | bytearray | None = None
        self._resume: HashCheckpoint | None = None
        self.upload_id: str | None = None
        self.resumable = self.multipart and bool(fingerprint) and hashstate.available()
        self.journal = (
            UploadJournal(store, path, size=size, part_size=part_size, fingerprint=fingerprint)
            if self.resumable
            else None
        )
        if self.multipart and not self._resume_earlier():
            resp = store.call("create_multipart_upload", path, Bucket=store.uri.bucket, Key=self.key)
            self.upload_id = str(resp["UploadId"])
            if self.journal is not None:
                self.journal.start(self.upload_id)

    # -- resume ---------------------------------------------------------------

    def _resume_earlier(self) -> bool:
        """Adopt an earlier run's upload of the same source version when its parts check out."""
        if self.journal is None:
            return False
        record, leftover = self.journal.load()
        if record is not None and record.checkpoint is not None and self._adopt(record, record.checkpoint):
            return True
        if leftover is not None:
            self._abort_id(leftover)  # another version, or nothing usable: its parts would only cost money
        return False

    def _adopt(self, record: ResumeRecord, checkpoint: HashCheckpoint) -> bool:
        position = checkpoint.position
        if position > self.size or (position % self.part_size and position != self.size):
            return False
        done = range(-(-position // self.part_size))
        listed = self._list_parts(record.upload_id)
        if listed is None:
            return False
        for i in done:
            length = min(self.part_size, self.size - i * self.part_size)
            stored = listed.get(i + 1)
            md5 = record.part_md5.get(i)
            if stored is None or stored[1] != length or md5 is None:
                return False
            etag = clean_etag(stored[0]) or ""
            if len(etag) == 32 and etag != md5.hex():  # a plain MD5 ETag that disagrees: not our bytes
                return False
        self.upload_id = record.upload_id
        self._etags = {i: listed[i + 1][0] for i in done}
        self._md5s = {i: record.part_md5[i] for i in done}
        self._resume = checkpoint
        assert self.journal is not None
        self.journal.start(record.upload_id, checkpoint, self._md5s)
        log.info("resuming the upload of %s: %d of %d parts already stored", self.describe, len(done), self.parts_total)
        return True

    def _list_parts(self, upload_id: str) -> dict[int, tuple[str, int]] | None:
        """PartNumber -> (ETag, size) of a multipart upload, None when it is gone or cannot be listed."""
        parts: dict[int, tuple[str, int]] = {}
        marker = 0
        try:
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
        except ModelferryError as exc:
            log.info("cannot resume the upload of %s (%s): starting over", self.describe, exc)
            return None

    def resume_point(self) -> HashCheckpoint | None:
        return self._resume

    def finished_parts(self) -> set[int]:
        return set(range(-(-self._resume.position // self.part_size))) if self._resume is not None else set()

    def stored_part_md5(self, index: int) -> bytes | None:
        with self._lock:
            return self._md5s.get(index)

    def save_checkpoint(self, checkpoint: HashCheckpoint) -> None:
        if self.journal is not None and self.upload_id is not None:
            with self._lock:
                md5s = dict(self._md5s)
            self.journal.record(checkpoint, md5s, self.part_size)

    # -- writing --------------------------------------------------------------

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
            self._md5s[index] = digest

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
        if self.journal is not None:
            self.journal.remove()
        return clean_etag(resp.get("ETag"))

    def abort(self, *, keep_partial: bool = False) -> None:
        self._single = None
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is None:
            return
        if keep_partial and self.journal is not None:
            # The run will be retried (Job backoff, rerun): keep the parts and say how far they go.
            self.journal.flush()
            log.info("kept the multipart upload of %s for the next run to resume", self.describe)
            return
        # Parts of an unfinished multipart upload are billed and invisible: do not leave them behind.
        self._abort_id(upload_id)
        if self.journal is not None:
            self.journal.remove()

    def _abort_id(self, upload_id: str) -> None:
        try:
            self.store.call(
                "abort_multipart_upload", self.path, Bucket=self.store.uri.bucket, Key=self.key, UploadId=upload_id
            )
        except NotFoundError:
            log.debug("the multipart upload of %s was already gone", self.describe)
        except ModelferryError as exc:
            log.warning("could not abort the multipart upload of %s: %s", self.describe, exc)
