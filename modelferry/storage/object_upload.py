"""What S3 and Oracle uploads share: whole parts in memory, one request each, resumable multipart.

A one-part file is sent with a single PUT on :meth:`complete`, after the engine
verified its bytes. A larger file is a multipart upload whose progress is kept
in an :class:`~modelferry.storage.upload_journal.UploadJournal` in the target
prefix. A run stopped by a retryable error or SIGTERM keeps the upload and its
record; a run killed outright leaves them as they were at the last write. The
next run with the same source version checks the record against the store's
own part listing (every part before the checkpoint present, with the size and
ETag it had) and carries on after it with the hash state saved there; anything
that does not match starts over and aborts the old upload. Failures that will
not be retried (a checksum mismatch, a permanent error) abort the upload, since
unfinished parts are billed and invisible.

Subclasses supply the five store calls (``_create``, ``_send_part``,
``_stored_parts``, ``_commit``, ``_put_single``) and ``_abort_id``.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import threading

from modelferry import hashstate
from modelferry.checksums import clean_etag
from modelferry.errors import ModelferryError, RetryableError
from modelferry.hashstate import HashCheckpoint
from modelferry.storage.base import PartWriter, Store, Upload
from modelferry.storage.buffered_part import BUFFERS, BufferedPart
from modelferry.storage.upload_journal import ResumeRecord, UploadJournal

log = logging.getLogger(__name__)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


class ObjectUpload(Upload):
    """One object being written to a bucket; call :meth:`begin` at the end of the subclass constructor."""

    buffers_parts = True

    def __init__(self, store: Store, path: str, size: int, part_size: int, fingerprint: str) -> None:
        self.path = path
        self.size = size
        self.part_size = part_size
        self.describe = store.describe(path)
        self.parts_total = max(1, -(-size // part_size)) if size else 1
        self.multipart = self.parts_total > 1
        self._lock = threading.Lock()
        self._parts: dict[int, tuple[bytes, str]] = {}  # index -> (MD5, ETag) of stored parts
        self._single: bytes | bytearray | None = None
        self._resume: HashCheckpoint | None = None
        self.upload_id: str | None = None
        self.resumable = self.multipart and bool(fingerprint) and hashstate.available()
        self.journal = (
            UploadJournal(
                store, path, size=size, part_size=part_size, fingerprint=fingerprint, parts_below=self._parts_below
            )
            if self.resumable
            else None
        )

    def begin(self) -> None:
        """Adopt an earlier run's upload when it checks out, else start a new one (multipart only)."""
        if not self.multipart or self._resume_earlier():
            return
        self.upload_id = self._create()
        if self.journal is not None:
            self.journal.start(self.upload_id)

    # -- store calls ------------------------------------------------------------

    @abc.abstractmethod
    def _create(self) -> str:
        """Start a multipart upload; its id."""

    @abc.abstractmethod
    def _send_part(self, index: int, data: bytes | bytearray, md5: bytes | None) -> str:
        """Upload part ``index`` (0-based) with its Content-MD5 (None: the store's cheaper checksum); its ETag."""

    def _part_md5(self, data: bytes | bytearray) -> bytes | None:
        """The part's MD5 for Content-MD5, or None where the store verifies a cheaper checksum instead."""
        return hashlib.md5(data).digest()  # noqa: S324 - Content-MD5 is the protocol's checksum

    @abc.abstractmethod
    def _stored_parts(self, upload_id: str) -> dict[int, tuple[str, int]]:
        """Part number (1-based) -> (ETag, size) of a multipart upload; raises when it is gone."""

    @abc.abstractmethod
    def _commit(self, etags: list[tuple[int, str]]) -> str | None:
        """Complete the multipart upload from (part number, ETag) pairs; the object's checksum tag."""

    @abc.abstractmethod
    def _put_single(self, data: bytes | bytearray) -> str | None:
        """Write a one-part object in one request; its ETag."""

    @abc.abstractmethod
    def _abort_id(self, upload_id: str) -> None:
        """Abort a multipart upload (best effort, never raises)."""

    # -- resume -----------------------------------------------------------------

    def _resume_earlier(self) -> bool:
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
        try:
            listed = self._stored_parts(record.upload_id)
        except ModelferryError as exc:
            log.info("cannot resume the upload of %s (%s): starting over", self.describe, exc)
            return False
        for i in done:
            length = min(self.part_size, self.size - i * self.part_size)
            stored, recorded = listed.get(i + 1), record.parts.get(i)
            if stored is None or recorded is None or stored[1] != length:
                return False
            if clean_etag(stored[0]) != clean_etag(recorded[1]):  # quoting differs between calls on some stores
                return False
        self.upload_id = record.upload_id
        self._parts = {i: record.parts[i] for i in done}
        self._resume = checkpoint
        assert self.journal is not None
        self.journal.start(record.upload_id, checkpoint)
        log.info("resuming the upload of %s: %d of %d parts already stored", self.describe, len(done), self.parts_total)
        return True

    def resume_point(self) -> HashCheckpoint | None:
        return self._resume

    def finished_parts(self) -> set[int]:
        return set(range(-(-self._resume.position // self.part_size))) if self._resume is not None else set()

    def stored_part_md5(self, index: int) -> bytes | None:
        with self._lock:
            part = self._parts.get(index)
        return part[0] if part is not None else None

    def save_checkpoint(self, checkpoint: HashCheckpoint) -> None:
        if self.journal is not None and self.upload_id is not None:
            self.journal.record(checkpoint)

    def _parts_below(self, position: int) -> dict[int, tuple[bytes, str]]:
        with self._lock:
            return {i: self._parts[i] for i in range(-(-position // self.part_size)) if i in self._parts}

    # -- writing ------------------------------------------------------------------

    def part(self, index: int, offset: int, length: int) -> PartWriter:
        return BufferedPart(self, index, length)

    def commit_part(self, index: int, data: bytes | bytearray) -> None:
        if not self.multipart:
            self._single = data  # sent on complete(), after the engine verified the bytes
            return
        md5 = self._part_md5(data)
        try:
            etag = self._send_part(index, data, md5)
            if md5 is None:  # verified with another checksum: the store's ETag is the MD5 (resumed copies need it)
                hexed = clean_etag(etag) or ""
                md5 = bytes.fromhex(hexed) if len(hexed) == 32 and _is_hex(hexed) else hashlib.md5(data).digest()  # noqa: S324
        finally:
            BUFFERS.give(data)  # the request is over, whatever its outcome: nothing refers to the bytes now
        with self._lock:
            self._parts[index] = (md5, etag)

    def complete(self) -> str | None:
        if not self.multipart:
            data = self._single if self._single is not None else b""
            self._single = None
            try:
                return self._put_single(data)
            finally:
                BUFFERS.give(data)
        with self._lock:
            etags = [(i + 1, self._parts[i][1]) for i in sorted(self._parts)]
        if len(etags) != self.parts_total:
            raise RetryableError(f"{len(etags)} of {self.parts_total} parts uploaded", obj=self.describe)
        tag = self._commit(etags)
        self.upload_id = None
        if self.journal is not None:
            self.journal.remove()
        return tag

    def abort(self, *, keep_partial: bool = False) -> None:
        self._single = None
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is None:
            return
        if keep_partial and self.journal is not None:
            # The run will be retried (Job backoff, rerun): keep the parts and say how far they go,
            # unless the record cannot be written (then nothing could find the parts again).
            self.journal.flush()
            if self.journal.active:
                log.info("kept the multipart upload of %s for the next run to resume", self.describe)
                return
        self._abort_id(upload_id)
        if self.journal is not None:
            self.journal.remove()
