"""The engine: list, plan, move bytes with many connections, verify, place, record.

Parts of every file go into one queue in file order (largest files first) and
``concurrency`` worker threads take them from the head, so the in-order hash of
each file rarely waits on a slow early range and several files are in flight at
once. For targets that must hold a whole part in memory (object stores), a part
is only taken when the memory budget allows, in queue order, which keeps peak
memory bounded and cannot deadlock: the earliest part in flight always holds
its share.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import threading
from collections.abc import Iterator

from modelferry.errors import (
    AccessDeniedError,
    InsufficientSpaceError,
    IntegrityError,
    ModelferryError,
    RetryableError,
)
from modelferry.retry import Cancelled, retry_call
from modelferry.settings import TransferSettings
from modelferry.speed import LowSpeedGuard
from modelferry.storage.base import ObjectInfo, Store
from modelferry.transfer.inflight import (
    FileJob,
    NullUpload,
    files_in_flight,
    interleave,
    part_layout,
    scheduling_part_size,
)
from modelferry.transfer.manifest import Manifest, ManifestEntry, read_manifest
from modelferry.transfer.part import copy_part
from modelferry.transfer.plan import Action, Plan, PlanItem, PlanOptions, SyncOptions, make_plan
from modelferry.transfer.progress import Progress
from modelferry.transfer.verify import InOrderHasher, check

log = logging.getLogger(__name__)


class Engine:
    """Moves one plan from ``source`` to ``target``."""

    def __init__(
        self,
        source: Store,
        target: Store,
        settings: TransferSettings,
        *,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.settings = settings
        self.progress = progress or Progress(mode="none")
        self.cancel = cancel or threading.Event()
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[FileJob, int]] = collections.deque()
        self._groups: Iterator[list[FileJob]] = iter(())
        self._budget_used = 0
        self._jobs_left = 0
        self._error: BaseException | None = None
        self._entries: dict[str, ManifestEntry] = {}
        self._open: set[FileJob] = set()
        self.refetched: list[str] = []
        self.target_files: dict[str, ObjectInfo] = {}
        self._hash_budget = settings.memory_budget
        self.server_copy = bool(target.features.server_side_copy and source.identity() == target.identity())
        self.speed = LowSpeedGuard(settings.speed_limit, settings.speed_time)

    # -- planning ---------------------------------------------------------------

    def plan(self, options: SyncOptions) -> tuple[Plan, Manifest | None]:
        self.source.resolve()
        source_files = list(self.source.list())
        source_manifest = read_manifest(self.source)
        target_files, target_manifest = self._target_state(options.dry_run)
        self.target_files = target_files
        plan = make_plan(
            source_files,
            target_files,
            options=PlanOptions(
                include=options.include,
                exclude=options.exclude,
                size_limit=self.settings.size_limit or None,
                trust_size=self.settings.trust_size,
                target_is_local=self.target.features.random_write,
                source_is_local=self.source.features.random_write,
            ),
            target_manifest=target_manifest.by_path() if target_manifest else None,
            source_manifest=source_manifest.by_path() if source_manifest else None,
            describe_source=self.source.describe(),
        )
        return plan, target_manifest

    def _target_state(self, dry_run: bool) -> tuple[dict[str, ObjectInfo], Manifest | None]:
        """What the target holds. A dry run without the target's credentials plans every file as a copy."""
        try:
            self.target.resolve()
            return {i.path: i for i in self.target.list()}, read_manifest(self.target)
        except AccessDeniedError as exc:
            if not dry_run:
                raise
            log.warning(
                "dry run: the target could not be read (%s); every file is planned as a copy. Give the target's "
                "credentials to see what it already holds",
                exc.message,
            )
            return {}, None

    def check_space(self, plan: Plan) -> None:
        free = self.target.free_space()
        if free is None:
            return
        need = plan.copy_bytes + self.settings.free_space_margin
        if need > free:
            raise InsufficientSpaceError(
                f"the target has {free} bytes free but the plan needs {plan.copy_bytes} (+{self.settings.free_space_margin} margin)",
                obj=self.target.describe(),
                hint="Free space on the volume, use a larger one, or narrow the copy with --include/--exclude",
            )

    # -- running ---------------------------------------------------------------

    def run(self, plan: Plan) -> dict[str, ManifestEntry]:
        """Copy every COPY item; returns manifest entries for copied files."""
        copies = [i for i in plan.items if i.action == Action.COPY]
        skipped = [i for i in plan.items if i.action == Action.SKIP]
        self.progress.start(len(plan.items), plan.total_bytes, len(skipped), sum(i.source.size for i in skipped))
        group = files_in_flight(self.settings.concurrency, len(copies))
        # Up to two groups are open at once (one finishing, the next starting); half the
        # budget goes to out-of-order bytes, the rest covers chunks in flight and buffers.
        self._hash_budget = max(8 << 20, self.settings.memory_budget // (4 * group))
        # Per-file transfer state is made a group at a time as the queue drains (memory flat in
        # the number of files); the queue order is the same as building it all up front.
        self._groups = (
            [self._make_job(item, group) for item in copies[first : first + group]]
            for first in range(0, len(copies), group)
        )
        with self._cond:
            self._jobs_left = len(copies)
            self._refill()
        parts = len(self._queue) if len(copies) <= group else self.settings.concurrency
        threads = [
            threading.Thread(target=self._worker, name=f"transfer-{n}", daemon=True)
            for n in range(min(self.settings.concurrency, parts) or 1)
        ]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)
                    if self.cancel.is_set() and self._error is None:
                        with self._cond:
                            self._error = self._error or Cancelled("sync cancelled (SIGTERM or interrupt)")
                            self._cond.notify_all()
                        # Reads blocked on a silent server would otherwise wait out the stall timeout.
                        self.source.interrupt()
        finally:
            self.progress.stop()
            self._abort_open()
        if self._error is not None:
            raise self._error
        return dict(self._entries)

    def _make_job(self, item: PlanItem, group: int = 1) -> FileJob:
        part_size = self.settings.part_size
        if self.target.features.random_write:  # parts are only a scheduling unit for files written in place
            part_size = scheduling_part_size(item.source.size, part_size, self.settings.concurrency, group)
        part_size, aligned = part_layout(item.source.size, part_size, item.expected, self.target.features)
        job = FileJob(
            item=item,
            part_size=part_size,
            want_part_md5=aligned and item.expected.strength == "multipart-etag",
            server_copy=self.server_copy,
        )
        job.reset()
        if job.server_copy and item.source.sha256:
            job.parts = [(0, 0)]  # nothing to read: copy server-side and trust the known sha256
            job.remaining = 1
        return job

    def _buffers(self, job: FileJob) -> bool:
        if job.server_copy:
            return True
        return not self.target.features.random_write

    def _refill(self) -> None:
        """Queue the parts of further groups while fewer than two rounds of connections wait (lock held)."""
        while len(self._queue) < 2 * self.settings.concurrency:
            members = next(self._groups, None)
            if members is None:
                return
            for n, idx in interleave([len(j.parts) for j in members], len(members)):
                self._queue.append((members[n], idx))

    def _worker(self) -> None:
        while True:
            with self._cond:
                while True:
                    self._refill()
                    if self._error is not None or (self._jobs_left == 0 and not self._queue):
                        self._cond.notify_all()
                        return
                    if self._queue:
                        job, idx = self._queue[0]
                        cost = job.parts[idx][1] if self._buffers(job) else 0
                        if self._budget_used == 0 or self._budget_used + cost <= self.settings.memory_budget:
                            self._queue.popleft()
                            self._budget_used += cost
                            break
                    self._cond.wait(timeout=1.0)
            try:
                self._run_part(job, idx)
            except BaseException as exc:
                with self._cond:
                    if self._error is None:
                        self._error = exc
                    self._cond.notify_all()
                return

    def _release(self, job: FileJob, idx: int) -> None:
        if not self._buffers(job) or idx in job.released:
            return
        job.released.add(idx)
        with self._cond:
            self._budget_used -= job.parts[idx][1]
            self._cond.notify_all()

    def _ensure_open(self, job: FileJob) -> None:
        with job.open_lock:
            if job.upload is not None:
                return
            info = job.info
            if job.server_copy:
                job.upload = NullUpload(info.path, info.size, job.part_size)
            else:
                job.upload = self.target.open_upload(info.path, info.size, job.part_size, fingerprint=job.fingerprint())
            md5, sha1 = job.wants()
            read_back = None if job.upload.buffers_parts or job.server_copy else job.upload.read_back
            resumable = job.upload.resumable and not job.server_copy
            job.hasher = InOrderHasher(
                info.size,
                md5=md5,
                git_sha1=sha1,
                read_back=read_back,
                budget=None if read_back is None else self._hash_budget,
                checkpoints={off + ln for off, ln in job.parts} if resumable else None,
                resume=job.upload.resume_point() if resumable else None,
            )
            job.finished = job.upload.finished_parts() if not job.server_copy else set()
            with self._cond:
                self._open.add(job)

    def _run_part(self, job: FileJob, idx: int) -> None:
        self._ensure_open(job)
        assert job.upload is not None and job.hasher is not None
        offset, length = job.parts[idx]
        info = job.info
        if idx in job.finished:
            if job.want_part_md5:
                stored = job.upload.stored_part_md5(idx)
                if stored is None:
                    data = job.upload.read_back(offset, length) or b""
                    stored = hashlib.md5(data).digest()  # noqa: S324 - protocol checksum
                job.part_md5[idx] = stored
            job.hasher.mark_on_disk(offset, offset + length)
            self.progress.add_bytes(length, 0)
        elif length > 0 or not (job.server_copy and info.sha256):
            digest = retry_call(
                lambda: self._fetch_part(job, idx, offset, length),
                retries=self.settings.retries,
                base=self.settings.backoff_base,
                cap=self.settings.backoff_max,
                what=f"{self.source.describe(info.path)} bytes {offset}-{offset + length}",
                cancel=self.cancel,
                on_retry=lambda _e, _n: self.progress.retried(),
            )
            if digest is not None:
                job.part_md5[idx] = digest
        job.committed.add(idx)
        self._release_hashed(job)
        with self._cond:
            job.remaining -= 1
            last = job.remaining == 0
        if last:
            self._finish_file(job)
        elif job.upload.resumable:
            self._save_checkpoint(job)

    def _save_checkpoint(self, job: FileJob) -> None:
        """Hand the upload the hash state at the end of its longest run of stored parts (resume)."""
        assert job.upload is not None and job.hasher is not None
        with job.open_lock:
            while job.stored_prefix < len(job.parts) and job.stored_prefix in job.committed:
                job.stored_prefix += 1
            limit = sum(job.parts[job.stored_prefix - 1]) if job.stored_prefix else 0
        checkpoint = job.hasher.checkpoint_within(limit)
        if checkpoint is not None:
            job.upload.save_checkpoint(checkpoint)

    def _release_hashed(self, job: FileJob) -> None:
        # Called after every chunk: nothing to release for streaming (local) targets.
        if not self._buffers(job):
            return
        assert job.hasher is not None
        pos = job.hasher.position
        for i in list(job.committed - job.released):
            off, ln = job.parts[i]
            if off + ln <= pos:
                self._release(job, i)

    def _fetch_part(self, job: FileJob, idx: int, offset: int, length: int) -> bytes | None:
        return copy_part(
            self.source,
            job,
            idx,
            offset,
            length,
            progress=self.progress,
            stopped=lambda: self.cancel.is_set() or self._error is not None,
            after_chunk=lambda: self._release_hashed(job),
            speed=self.speed,
        )

    def _finish_file(self, job: FileJob) -> None:
        assert job.upload is not None and job.hasher is not None
        info = job.info
        skip_hash = job.server_copy and bool(info.sha256)
        if not skip_hash and not job.hasher.wait_complete(timeout=3600):
            raise RetryableError("hashing did not finish", obj=info.path)
        for i in range(len(job.parts)):
            self._release(job, i)
        sha256 = info.sha256 if skip_hash and info.sha256 else job.hasher.sha256()
        part_md5s = [job.part_md5[i] for i in range(len(job.parts))] if job.want_part_md5 else None
        mismatch = (
            None
            if skip_hash
            else check(
                job.item.expected,
                size=info.size,
                got_size=job.hasher.position,
                sha256=sha256,
                md5=job.hasher.md5(),
                git_sha1=job.hasher.git_sha1(),
                part_md5s=part_md5s,
            )
        )
        if mismatch is not None:
            job.upload.abort(keep_partial=False)
            with self._cond:
                self._open.discard(job)
            if job.attempt == 0:
                log.warning(
                    "checksum mismatch for %s (%s): fetching it again",
                    self.source.describe(info.path),
                    mismatch,
                )
                self.refetched.append(info.path)
                job.attempt += 1
                job.reset()
                with self._cond:
                    for idx in reversed(range(len(job.parts))):
                        self._queue.appendleft((job, idx))
                    self._cond.notify_all()
                return
            raise IntegrityError(
                f"{self.source.describe(info.path)} failed verification twice: {mismatch}",
                obj=self.source.describe(info.path),
                hint="The source object is corrupt or changed during the copy; nothing was written under its final name",
            )
        if job.server_copy:
            etag = retry_call(
                lambda: self.target.copy_within(self.source, info, info.path, job.part_size),
                retries=self.settings.retries,
                base=self.settings.backoff_base,
                cap=self.settings.backoff_max,
                what=f"server-side copy of {info.path}",
                cancel=self.cancel,
            )
            self.progress.add_bytes(0 if not skip_hash else info.size, 0)
        else:
            etag = job.upload.complete()
        with self._cond:
            self._open.discard(job)
        entry = ManifestEntry(
            path=info.path,
            size=info.size,
            sha256=sha256,
            etag=etag,
            source_etag=info.etag,
            part_size=job.part_size if not self.target.features.random_write else None,
        )
        if self.target.features.random_write:
            stat = self.target.stat(info.path)
            entry.mtime_ns = stat.mtime_ns if stat else None
        with self._cond:
            self._entries[info.path] = entry
            self._jobs_left -= 1
            self._cond.notify_all()
        self.progress.file_done()
        log.debug("placed %s (%d bytes, sha256 %s)", info.path, info.size, sha256)

    def _abort_open(self) -> None:
        keep = self._error is None or (isinstance(self._error, ModelferryError) and self._error.retryable)
        with self._cond:
            open_jobs = list(self._open)
            self._open.clear()
        for job in open_jobs:
            if job.upload is not None:
                if keep and job.upload.resumable and job.hasher is not None:
                    with contextlib.suppress(Exception):
                        self._save_checkpoint(job)  # the latest state, for the run that resumes this
                with contextlib.suppress(Exception):
                    job.upload.abort(keep_partial=keep)
