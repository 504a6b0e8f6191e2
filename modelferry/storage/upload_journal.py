"""The resume record of one multipart upload, kept in the target store beside the upload.

A sync runs in a Job pod: after a SIGKILL (OOM, node drain) the next attempt is
a new pod with a new filesystem, so the record lives where the parts live, as a
small JSON object at ``<prefix>/.modelferry/partial/<stem>.json``. It names the
upload, the source version it belongs to (fingerprint, size, part size), the
hash state after the last part known to be stored, and the MD5 and ETag of
each part before it (the ETag is compared with the store's own part listing).
It is rewritten at most every :data:`INTERVAL` seconds while parts finish (a
kill loses at most that much progress; the lost parts are sent again) and at
once when a run stops with a retryable error or SIGTERM.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from modelferry.errors import ModelferryError
from modelferry.hashstate import HashCheckpoint
from modelferry.storage.base import PARTIAL_DIR, Store, partial_stem

log = logging.getLogger(__name__)

INTERVAL = 2.0
VERSION = 1


@dataclass(frozen=True)
class ResumeRecord:
    """What an earlier run left: its upload id, and how far it got when it last said so."""

    upload_id: str
    checkpoint: HashCheckpoint | None
    parts: dict[int, tuple[bytes, str]]  # part index -> (MD5, ETag the store answered)


class UploadJournal:
    """Reads and writes the record of ``path``'s multipart upload in ``store``."""

    def __init__(
        self,
        store: Store,
        path: str,
        *,
        size: int,
        part_size: int,
        fingerprint: str,
        parts_below: Callable[[int], dict[int, tuple[bytes, str]]],
    ) -> None:
        """``parts_below(position)``: (MD5, ETag) of the stored parts before byte ``position``, read at each write."""
        self.store = store
        self._parts_below = parts_below
        self.name = f"{PARTIAL_DIR}/{partial_stem(path)}.json"
        self.header: dict[str, Any] = {
            "version": VERSION,
            "path": path,
            "size": size,
            "part_size": part_size,
            "fingerprint": fingerprint,
        }
        self._lock = threading.Lock()  # one writer at a time, so an older state never lands last
        self._upload_id: str | None = None
        self._checkpoint: HashCheckpoint | None = None
        self._written_at = 0.0
        self._written_position = -1

    @property
    def active(self) -> bool:
        """True while the record names a live upload (false once a write failed or it was removed)."""
        with self._lock:
            return self._upload_id is not None

    def load(self) -> tuple[ResumeRecord | None, str | None]:
        """(the record when it belongs to this source version, else None; any upload id it names)."""
        try:
            raw = self.store.read_bytes(self.name)
        except ModelferryError as exc:
            log.info("cannot read the resume record %s: %s", self.store.describe(self.name), exc)
            return None, None
        if raw is None:
            return None, None
        try:
            data = json.loads(raw)
            upload_id = str(data["upload_id"])
        except (ValueError, KeyError, TypeError):
            return None, None
        if {k: data.get(k) for k in self.header} != self.header:
            return None, upload_id  # another source version or part size: its upload is a leftover
        try:
            parts = {
                int(k): (bytes.fromhex(v["md5"]), str(v["etag"])) for k, v in dict(data.get("parts") or {}).items()
            }
        except (ValueError, TypeError, AttributeError, KeyError):
            return None, upload_id
        checkpoint = HashCheckpoint.from_json(data["checkpoint"]) if data.get("checkpoint") else None
        return ResumeRecord(upload_id, checkpoint, parts), upload_id

    def start(self, upload_id: str, checkpoint: HashCheckpoint | None = None) -> None:
        """Name the upload at once, so a kill right after leaves something to resume or clean up."""
        with self._lock:
            self._upload_id = upload_id
            self._checkpoint = checkpoint
        self.flush()

    def record(self, checkpoint: HashCheckpoint) -> None:
        """Remember a new checkpoint (cheap: called after every part); written every :data:`INTERVAL` s."""
        with self._lock:
            if self._checkpoint is not None and checkpoint.position <= self._checkpoint.position:
                return
            self._checkpoint = checkpoint
            due = time.monotonic() - self._written_at >= INTERVAL
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the latest record now (best effort: a failed write only costs progress)."""
        with self._lock:
            if self._upload_id is None:
                return
            position = self._checkpoint.position if self._checkpoint is not None else 0
            if position == self._written_position:
                return
            body = dict(self.header)
            body["upload_id"] = self._upload_id
            body["checkpoint"] = self._checkpoint.to_json() if self._checkpoint is not None else None
            parts = self._parts_below(position)
            body["parts"] = {str(i): {"md5": m.hex(), "etag": e} for i, (m, e) in sorted(parts.items())}
            try:
                self.store.put_bytes(self.name, json.dumps(body).encode())
            except ModelferryError as exc:
                # Once is enough: the copy goes on, it just cannot be resumed if it is interrupted.
                log.warning(
                    "could not write the resume record %s (%s); this upload will start over if interrupted",
                    self.store.describe(self.name),
                    exc,
                )
                self._upload_id = None
                return
            self._written_at = time.monotonic()
            self._written_position = position

    def remove(self) -> None:
        """The upload is complete or abandoned: its record goes (best effort)."""
        with self._lock:
            self._upload_id = None
        try:
            self.store.delete(self.name)
        except ModelferryError as exc:
            log.warning("could not remove the resume record %s: %s", self.store.describe(self.name), exc)


def record_stems(keep: Iterable[str]) -> set[str]:
    """The record name stems of the ``keep`` paths (see :func:`stale_record`)."""
    return {partial_stem(path) for path in keep}


def stale_record(name: str, wanted: set[str]) -> bool:
    """True when the record object ``name`` belongs to none of the paths whose stems are ``wanted``."""
    return name.rsplit("/", 1)[-1].removesuffix(".json") not in wanted


def drop_records(store: Store, names: Iterable[str], abort: Callable[[str, str], None]) -> None:
    """Abort the upload each record names (``abort(path, upload_id)``) and delete the record."""
    for name in names:
        try:
            record = json.loads(store.read_bytes(name) or b"{}")
            path, upload_id = str(record["path"]), str(record["upload_id"])
        except (ValueError, KeyError, TypeError):
            path = upload_id = ""
        if path and upload_id:
            log.info("aborting the unfinished upload of %s left by an earlier run", store.describe(path))
            abort(path, upload_id)
        store.delete(name)
