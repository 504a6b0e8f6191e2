"""The engine: list, plan, move bytes with many connections, verify, place, record.

Parts of every file go into one queue (:mod:`modelferry.transfer.part_queue`) in file order
(largest files first) and ``concurrency`` worker threads take them from the head, so the in-order
hash of each file rarely waits on a slow early range and several files are in flight at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Iterable, Iterator
from itertools import islice

from modelferry.errors import (
    InsufficientSpaceError,
    IntegrityError,
    ModelferryError,
    RetryableError,
)
from modelferry.retry import Cancelled, retry_call
from modelferry.settings import TransferSettings
from modelferry.speed import LowSpeedGuard
from modelferry.storage.base import Store
from modelferry.transfer.index import TreeIndex
from modelferry.transfer.inflight import (
    FileJob,
    NullUpload,
    files_in_flight,
    part_layout,
    scheduling_part_size,
    worker_count,
)
from modelferry.transfer.listing import build_plan
from modelferry.transfer.manifest import ManifestEntry
from modelferry.transfer.part import copy_part
from modelferry.transfer.part_queue import PartQueue
from modelferry.transfer.plan import Action, Plan, PlanItem, PlanOptions, SyncOptions
from modelferry.transfer.progress import Progress
from modelferry.transfer.verify import InOrderHasher, check

log = logging.getLogger(__name__)


def batched(items: Iterable[PlanItem], size: int) -> Iterator[list[PlanItem]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


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
        self.queue = PartQueue(settings.concurrency, settings.memory_budget, self._cost)
        self._open: set[FileJob] = set()
        self._open_lock = threading.Lock()  # guards _open only: the queue's lock is not taken for it
        self.refetched: list[str] = []
        self.index: TreeIndex | None = None
        self._hash_budget = settings.memory_budget
        self.server_copy = bool(target.features.server_side_copy and source.identity() == target.identity())
        self.speed = LowSpeedGuard(settings.speed_limit, settings.speed_time)

    @property
    def copied_files(self) -> int:
        return self.queue.files_done

    @property
    def copied_bytes(self) -> int:
        return self.queue.bytes_done

    @property
    def _error(self) -> BaseException | None:
        return self.queue.error

    # -- planning ---------------------------------------------------------------

    def plan(self, options: SyncOptions) -> tuple[Plan, bool]:
        """List both sides into a fresh index and decide; also whether the target has a manifest file."""
        if self.index is not None:
            self.index.close()
        self.index = TreeIndex()
        return build_plan(
            self.source,
            self.target,
            self.index,
            options,
            PlanOptions(
                include=options.include,
                exclude=options.exclude,
                size_limit=self.settings.size_limit or None,
                trust_size=self.settings.trust_size,
                target_is_local=self.target.features.random_write,
                source_is_local=self.source.features.random_write,
            ),
        )

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

    def run(self, plan: Plan) -> None:
        """Copy every COPY item; each placed file is recorded in the plan's index (``done``)."""
        self.index = plan.index
        copies = plan.count(Action.COPY)
        skipped = plan.count(Action.SKIP)
        self.progress.start(plan.count(), plan.total_bytes, skipped, plan.bytes_of(Action.SKIP))
        group = files_in_flight(self.settings.concurrency, copies)
        # Up to two groups are open at once (one finishing, the next starting); half the
        # budget goes to out-of-order bytes, the rest covers chunks in flight and buffers.
        self._hash_budget = max(8 << 20, self.settings.memory_budget // (4 * group))
        # Per-file transfer state is made a group at a time as the queue drains, from the plan
        # read back in batches (memory flat in the number of files).
        groups = ([self._make_job(item, group) for item in members] for members in batched(plan.of(Action.COPY), group))
        queued = self.queue.start(groups, copies)
        parts = queued if copies <= group else self.settings.concurrency
        workers = worker_count(self.settings.concurrency, parts, copies, plan.copy_bytes)
        # Placed files are durable when the scope ends (directory syncs may be deferred to then).
        with self.target.many_writes():
            self._run_workers(workers)
        if self._error is not None:
            raise self._error

    def _run_workers(self, workers: int) -> None:
        threads = [threading.Thread(target=self._worker, name=f"transfer-{n}", daemon=True) for n in range(workers)]
        for t in threads:
            t.start()
        interrupted = False
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)
                    if self.cancel.is_set() and not interrupted:
                        if self._error is None:  # a worker may have noticed the cancellation first
                            self.queue.fail(Cancelled("sync cancelled (SIGTERM or interrupt)"))
                        # Reads blocked on a silent server would otherwise wait out the stall timeout.
                        self.source.interrupt()
                        interrupted = True
        finally:
            self.progress.stop()
            self._abort_open()

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

    def _cost(self, job: FileJob, idx: int) -> int:
        """The memory a part holds while in flight (what the queue's budget counts)."""
        return job.parts[idx][1] if self._buffers(job) else 0

    def _worker(self) -> None:
        while (taken := self.queue.take()) is not None:
            try:
                self._run_part(*taken)
            except BaseException as exc:
                self.queue.fail(exc)
                return

    def _release(self, job: FileJob, idx: int) -> None:
        if not self._buffers(job) or idx in job.released:
            return
        job.released.add(idx)
        self.queue.release(job.parts[idx][1])

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
            with self._open_lock:
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
        if len(job.parts) == 1:
            last = True
        else:
            with job.open_lock:
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
            with self._open_lock:
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
                self.queue.requeue(job)
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
        with self._open_lock:
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
        assert self.index is not None
        self.index.record_done(entry)
        self.queue.file_done(info.size)
        self.progress.file_done()
        log.debug("placed %s (%d bytes, sha256 %s)", info.path, info.size, sha256)

    def _abort_open(self) -> None:
        keep = self._error is None or (isinstance(self._error, ModelferryError) and self._error.retryable)
        with self._open_lock:
            open_jobs = list(self._open)
            self._open.clear()
        for job in open_jobs:
            if job.upload is not None:
                if keep and job.upload.resumable and job.hasher is not None:
                    with contextlib.suppress(Exception):
                        self._save_checkpoint(job)  # the latest state, for the run that resumes this
                with contextlib.suppress(Exception):
                    job.upload.abort(keep_partial=keep)
