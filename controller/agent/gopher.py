"""The gopher: a pool of worker threads that carries out tasks with the transfer engine.

A download goes into ``<model>.modelferry-new`` beside the model (seeded with
hard links to the current copy, so unchanged files are not fetched again), is
verified by the engine and completed by its manifest, and only then swapped in
by two renames: a reader sees the old complete copy, then the new complete
copy, never half of one. An interrupted download resumes from the staging
directory's journal on the next attempt.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from modelferry.controller.agent.disk import (
    AGENT_MARKER,
    OLD_SUFFIX,
    STAGING_SUFFIX,
    Placement,
    check_owner,
    check_watermark,
    disk_usage,
    is_complete,
    marker_owner,
    model_dir,
    read_any_marker,
    read_marker,
    seed_with_links,
    swap_in,
)
from modelferry.controller.agent.entries import ModelEntry, ModelStatus
from modelferry.controller.agent.metrics import AgentMetrics
from modelferry.controller.agent.settings import AgentSettings
from modelferry.controller.agent.shape import excluded_shape_dirs, is_trtllm
from modelferry.controller.agent.tasks import ModelRef, Task, TaskQueue, TaskType
from modelferry.errors import ModelferryError, PathInUseError, PermanentError, RetryableError, UsageError
from modelferry.modelinfo import inspect_store
from modelferry.settings import Credentials
from modelferry.source_policy import check_cluster_source
from modelferry.storage import open_store
from modelferry.storage.base import Store
from modelferry.storage.local import LocalStore
from modelferry.transfer.plan import SyncOptions
from modelferry.transfer.sync import sync
from modelferry.uri import StorageURI, parse_uri

log = logging.getLogger(__name__)


class StatusSink(Protocol):
    """Where the gopher reports each model's state (the ConfigMap and label reconcilers)."""

    def publish(self, entry: ModelEntry) -> None: ...


CredentialsFor = Callable[[Task], Credentials]


def wants_decrypt(storage: dict[str, Any]) -> bool:
    """``spec.storage.decrypt: true`` (or OME-style ``parameters.decrypt: "true"``): enigma files are decrypted."""
    flag = storage.get("decrypt")
    if flag is None:
        flag = (storage.get("parameters") or {}).get("decrypt")
    return flag is True or str(flag).strip().lower() in ("true", "1", "yes")


def decrypting_source(source: Store) -> Store:
    """The source seen through enigma; KMS settings come from the agent's MODELFERRY_ENIGMA__* environment."""
    from modelferry.enigma.decrypting import decrypting
    from modelferry.enigma.kms import ProviderCache
    from modelferry.enigma.settings import EnigmaSettings

    return decrypting(source, ProviderCache(EnigmaSettings()))


def storage_of(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(((obj.get("spec") or {}).get("storage")) or {})


class Gopher:
    """Worker pool over a :class:`TaskQueue`."""

    def __init__(
        self,
        settings: AgentSettings,
        queue: TaskQueue,
        sink: StatusSink,
        metrics: AgentMetrics,
        *,
        credentials_for: CredentialsFor | None = None,
        shape: str | None = None,
        store_opener: Callable[[str, Credentials], Store] | None = None,
    ) -> None:
        self.settings = settings
        self.root = Path(settings.agent.models_root)
        self.queue = queue
        self.sink = sink
        self.metrics = metrics
        self.credentials_for = credentials_for or (lambda _task: settings.source)
        self.shape = shape
        self.store_opener = store_opener or self._open
        self.cancel = threading.Event()  # shutdown
        self._threads: list[threading.Thread] = []
        # The stop signal of each task that runs now: set at shutdown, or when its model stops being wanted.
        self._running: dict[ModelRef, threading.Event] = {}
        self._running_lock = threading.Lock()

    def _open(self, uri: str, creds: Credentials) -> Store:
        return open_store(parse_uri(uri), creds, settings=self.settings)

    # --- pool ----------------------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.settings.agent.workers):
            thread = threading.Thread(target=self._loop, name=f"gopher-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        self.cancel.set()
        with self._running_lock:
            for stop in self._running.values():
                stop.set()
        self.queue.close()
        for thread in self._threads:
            thread.join(timeout)

    def abandon(self, ref: ModelRef) -> bool:
        """Stop the download of ``ref`` that runs now, if any (its model is deleted or no longer wanted here).

        It ends without a status of its own: the delete queued behind it reports the model gone.
        """
        with self._running_lock:
            stop = self._running.get(ref)
        if stop is None:
            return False
        log.info("stopping the download of %s: the model is no longer wanted on this node", ref)
        stop.set()
        return True

    def alive(self) -> bool:
        """True while every worker thread runs (the /livez check)."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def _loop(self) -> None:
        while not self.cancel.is_set():
            self.metrics.queue_depth.set(self.queue.depth())
            task = self.queue.get(timeout=1.0)
            if task is None:
                continue
            self.metrics.active_workers.inc()
            try:
                self.run(task)
            except Exception:  # a bug in one task must not kill the worker
                log.exception("task %s for %s crashed", task.type, task.ref)
            finally:
                self.metrics.active_workers.dec()
                self.queue.done(task)
                self.metrics.queue_depth.set(self.queue.depth())

    # --- tasks ---------------------------------------------------------------------------------

    def placement(self, ref: ModelRef, obj: dict[str, Any]) -> Placement:
        final = model_dir(self.root, ref, storage_of(obj).get("path"))
        return Placement(final, final.with_name(final.name + STAGING_SUFFIX), final.with_name(final.name + OLD_SUFFIX))

    def held_fingerprint(self, ref: ModelRef, obj: dict[str, Any]) -> str | None:
        """The spec fingerprint of this node's complete copy of the model (None: no copy)."""
        try:
            place = self.placement(ref, obj)
        except ModelferryError:
            return None
        marker = read_marker(place.final)
        owner = marker_owner(marker) if marker else None
        if owner is not None and owner != ref:
            return None  # another model's copy: nothing of this model is held there
        if marker is None:
            return "unknown" if is_complete(place.final) else None
        return str(marker.get("fingerprint") or "unknown")

    def run(self, task: Task) -> None:
        """Carry out one task, reporting Updating / Ready / Failed / Deleted."""
        if task.type == TaskType.DELETE:
            self.delete(task)
            return
        stop = threading.Event()
        with self._running_lock:
            self._running[task.ref] = stop
        # Registered first, then checked: a delete queued before abandon() could see this task is caught here.
        if self.cancel.is_set() or self.queue.delete_pending(task.ref):
            stop.set()
        try:
            self._download_with_retries(task, stop)
        finally:
            with self._running_lock:
                self._running.pop(task.ref, None)

    def _abandoned(self, task: Task, stop: threading.Event) -> bool:
        """True when ``task`` was stopped because its model is no longer wanted (not at shutdown)."""
        if stop.is_set() and not self.cancel.is_set():
            log.info("download of %s stopped: the model is no longer wanted on this node", task.ref)
            return True
        return False

    def _download_with_retries(self, task: Task, stop: threading.Event) -> None:
        attempts = self.settings.agent.download_retries + 1
        delay = self.settings.agent.retry_backoff
        for attempt in range(1, attempts + 1):
            if self._abandoned(task, stop):
                return  # before an attempt: nothing is reported (not even a copy found complete)
            try:
                self.download(task, stop)
                return
            except ModelferryError as exc:
                if self._abandoned(task, stop):
                    return  # a failure during or after the stop is not the model's; its staging stays
                if not isinstance(exc, RetryableError):
                    if not isinstance(exc, PathInUseError):  # that staging directory is the other model's
                        self._discard_staging(task)  # permanent: a retry starts clean (and the space is freed)
                    self._failed(task, exc)
                    return
                if attempt == attempts or stop.is_set():
                    self._failed(task, exc)
                    return
                self.metrics.rate_limit_waits.inc()
                log.warning("download of %s failed (attempt %s of %s), retrying: %s", task.ref, attempt, attempts, exc)
                stop.wait(exc.retry_after or delay)
                delay *= 2
            except OSError as exc:
                self._failed(task, PermanentError(f"{task.ref}: {exc}", obj=str(task.ref)))
                return

    def _discard_staging(self, task: Task) -> None:
        if not self.settings.agent.cleanup_temp:
            return  # kept for inspection (OME --cleanup-temp=false); the next attempt resumes from it
        try:
            staging = self.placement(task.ref, task.obj).staging
        except ModelferryError:
            return
        shutil.rmtree(staging, ignore_errors=True)

    def _failed(self, task: Task, exc: ModelferryError) -> None:
        log.error("model %s failed on this node: %s", task.ref, exc)
        self.metrics.model_failed(task.ref, exc.reason)
        self.sink.publish(ModelEntry(task.ref, ModelStatus.FAILED, reason=exc.reason, message=str(exc)))

    def download(self, task: Task, stop: threading.Event | None = None) -> None:
        """Place the model's copy on this node and report it Ready (``stop``: end early, see :meth:`abandon`)."""
        stop = stop or self.cancel
        ref, obj = task.ref, task.obj
        storage = storage_of(obj)
        uri = storage.get("storageUri")
        if not uri:
            raise UsageError(f"{ref}: spec.storage.storageUri is empty", obj=str(ref))
        place = self.placement(ref, obj)
        check_owner(ref, read_any_marker(place.final), place.final)
        marker = read_marker(place.final)
        if marker and marker.get("fingerprint") == task.fingerprint:
            log.info("model %s is already complete on this node", ref)
            self._ready(task, place.final)
            return
        if self.settings.agent.read_only:
            raise UsageError(
                f"{ref} is not on this node and the models root is read-only",
                obj=str(ref),
                hint="Pre-populate the model, or run the agent with a writable models root",
            )
        self.check_source(ref, parse_uri(str(uri)))
        self.sink.publish(ModelEntry(ref, ModelStatus.UPDATING))
        started = time.monotonic()
        source = self.store_opener(str(uri), self.credentials_for(task))
        if wants_decrypt(storage):
            source = decrypting_source(source)
        place.staging.mkdir(parents=True, exist_ok=True)
        if is_complete(place.final):
            seed_with_links(place.final, place.staging)
        target = LocalStore(parse_uri(str(place.staging)), place.staging)
        try:
            source.resolve()
            exclude: tuple[str, ...] = ()
            if is_trtllm(obj):
                exclude = tuple(excluded_shape_dirs((f.path for f in source.list()), self.shape))
                log.info("TensorRT-LLM model %s: shape %s, skipping %s", ref, self.shape, exclude)
            transfer = self.settings.transfer
            planned = sync(source, target, transfer, SyncOptions(exclude=exclude, dry_run=True), cancel=stop)
            # An interrupted earlier attempt's partial files already hold their blocks: not counted twice.
            incoming = max(0, planned.plan.copy_bytes - target.resumable_bytes())
            check_watermark(disk_usage(self.root), incoming, self.settings.agent.high_watermark, what=str(ref))
            result = sync(source, target, transfer, SyncOptions(exclude=exclude), cancel=stop)
        finally:
            source.close()
        transferred = time.monotonic()
        if result.refetched:
            self.metrics.verifications.labels("refetched").inc(len(result.refetched))
        (place.staging / AGENT_MARKER).write_text(
            json.dumps(
                {
                    "kind": ref.kind,
                    "namespace": ref.namespace,
                    "name": ref.name,
                    "fingerprint": task.fingerprint,
                    "source": str(uri),
                    "revision": result.revision,
                }
            )
        )
        check_owner(ref, read_any_marker(place.final), place.final)  # another model may have landed there meanwhile
        if self._abandoned(task, stop):
            return  # not swapped in: the delete queued behind removes the staging copy, a re-want resumes it
        swap_in(place)
        self.metrics.ome.verification_duration.observe(time.monotonic() - transferred)
        self.metrics.model_downloaded(
            ref, seconds=time.monotonic() - started, nbytes=result.bytes_transferred, files=result.files_copied
        )
        log.info(
            "model %s ready at %s (%s files copied, %s skipped)",
            ref,
            place.final,
            result.files_copied,
            result.files_skipped,
        )
        self._ready(task, place.final)

    def check_source(self, ref: ModelRef, uri: StorageURI) -> None:
        """The agent reads with its own rights: remote stores only, or a local root the admin allowed.

        A local path must lie under an allowed root both as written and with its links resolved.
        """
        roots = self.settings.agent.allowed_local_roots
        where = f"{ref} spec.storage.storageUri"
        check_cluster_source(uri, allowed_local_roots=roots, where=where)
        if uri.scheme == "file":
            real = parse_uri(os.path.realpath(uri.path))
            check_cluster_source(real, allowed_local_roots=[os.path.realpath(r) for r in roots], where=where)

    def _ready(self, task: Task, directory: Path) -> None:
        config: dict[str, Any] | None = None
        message = None
        if not task.skip_config:
            try:
                config = inspect_store(LocalStore(parse_uri(str(directory)), directory)).to_dict()
            except ModelferryError as exc:
                # The bytes are verified; bad metadata must not make a usable model unavailable.
                message = f"metadata not parsed: {exc}"
                log.warning("model %s: %s", task.ref, message)
        self.sink.publish(ModelEntry(task.ref, ModelStatus.READY, config=config, message=message))

    def delete(self, task: Task) -> None:
        try:
            place = self.placement(task.ref, task.obj)
            check_owner(task.ref, read_any_marker(place.final), place.final)
        except PathInUseError as exc:
            log.warning("not deleting: %s", exc)
            self.sink.publish(ModelEntry(task.ref, ModelStatus.DELETED))
            return
        except ModelferryError as exc:
            self._failed(task, exc)
            return
        freed = 0
        for directory in (place.final, place.staging, place.old):
            if directory.exists():
                freed += sum(f.stat().st_size for f in directory.rglob("*") if f.is_file() and not f.is_symlink())
                shutil.rmtree(directory)
        self.metrics.cleanups.labels("deleted").inc()
        self.metrics.cleanup_bytes.inc(freed)
        log.info("model %s removed from this node (%s bytes freed)", task.ref, freed)
        self.sink.publish(ModelEntry(task.ref, ModelStatus.DELETED))
