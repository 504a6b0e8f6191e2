"""Download / DownloadOverride / Delete tasks: what to do for a model on this node, de-duplicated.

The scout turns watch events into :class:`Task` s with :func:`decide`; the
:class:`TaskQueue` keeps at most one pending task per model (the latest wins,
with the coalescing rules in :func:`coalesce`) and never hands out two tasks
for the same model at once.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SKIP_CONFIG_ANNOTATIONS = ("modelferry.io/skip-config-parsing", "ome.oracle.com/skip-config-parsing")


class TaskType(StrEnum):
    DOWNLOAD = "Download"
    DOWNLOAD_OVERRIDE = "DownloadOverride"
    DELETE = "Delete"


@dataclass(frozen=True, order=True)
class ModelRef:
    """A BaseModel (namespaced) or ClusterBaseModel (namespace empty)."""

    kind: str
    namespace: str
    name: str

    @property
    def cluster_scoped(self) -> bool:
        return self.kind == "ClusterBaseModel"

    @property
    def key(self) -> str:
        """ConfigMap entry key, as OME writes it: ``ns.basemodel.name`` or ``clusterbasemodel.name``."""
        if self.cluster_scoped:
            return f"clusterbasemodel.{self.name}"
        return f"{self.namespace}.basemodel.{self.name}"

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}" if self.cluster_scoped else f"{self.kind}/{self.namespace}/{self.name}"

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ModelRef:
        meta = obj.get("metadata") or {}
        kind = str(obj.get("kind") or ("BaseModel" if meta.get("namespace") else "ClusterBaseModel"))
        return cls(kind, str(meta.get("namespace") or "") if kind == "BaseModel" else "", str(meta.get("name", "")))


def spec_fingerprint(obj: dict[str, Any]) -> str:
    """What makes a copy stale: the storage spec (URI, path, key, parameters). Placement is not part of it."""
    storage = dict(((obj.get("spec") or {}).get("storage")) or {})
    for placement in ("nodeSelector", "nodeAffinity"):
        storage.pop(placement, None)
    return hashlib.sha256(json.dumps(storage, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Task:
    type: TaskType
    ref: ModelRef
    obj: dict[str, Any] = field(compare=False, hash=False, default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return spec_fingerprint(self.obj)

    @property
    def skip_config(self) -> bool:
        annotations = (self.obj.get("metadata") or {}).get("annotations") or {}
        return any(str(annotations.get(a, "")).lower() in ("true", "1", "yes") for a in SKIP_CONFIG_ANNOTATIONS)


def decide(
    obj: dict[str, Any] | None,
    *,
    wanted: bool,
    held_fingerprint: str | None,
    deleted: bool = False,
    ref: ModelRef | None = None,
    in_flight: bool = False,
    delete_queued: bool = False,
) -> Task | None:
    """One model's task from its desired state and what this node holds (None: nothing to do).

    ``held_fingerprint`` is the spec fingerprint of the complete copy on this node
    (None when there is none). ``in_flight``: a task for the model waits or runs (a download may
    still place a copy); ``delete_queued``: the task waiting for it is a delete.
    """
    if obj is None and ref is None:
        raise ValueError("decide needs the object or its ref")
    ref = ref or ModelRef.of(obj or {})
    if deleted or not wanted or obj is None:
        # A copy on disk, or one a download in flight may still place: the delete goes behind it.
        return Task(TaskType.DELETE, ref, obj or {}) if held_fingerprint is not None or in_flight else None
    fingerprint = spec_fingerprint(obj)
    if held_fingerprint is None:
        return Task(TaskType.DOWNLOAD, ref, obj)
    if held_fingerprint != fingerprint:
        return Task(TaskType.DOWNLOAD_OVERRIDE, ref, obj)
    if delete_queued:
        # Wanted again before its delete ran: coalesced with it, this becomes a DownloadOverride,
        # which keeps (and verifies) the copy instead of removing it.
        return Task(TaskType.DOWNLOAD, ref, obj)
    return None


def coalesce(pending: Task, new: Task) -> Task | None:
    """The one task left when ``new`` arrives while ``pending`` waits (None: they cancel out)."""
    if new.type == TaskType.DELETE:
        return new
    if pending.type == TaskType.DELETE:
        # Something is on disk (that is why a delete was queued): replace it rather than delete and refetch.
        return Task(TaskType.DOWNLOAD_OVERRIDE, new.ref, new.obj)
    if TaskType.DOWNLOAD_OVERRIDE in (pending.type, new.type):
        return Task(TaskType.DOWNLOAD_OVERRIDE, new.ref, new.obj)
    return new  # Download + Download: one download of the latest spec


class TaskQueue:
    """Thread-safe, per-model de-duplicating queue; a model is never worked on twice at once."""

    def __init__(self) -> None:
        self._pending: OrderedDict[ModelRef, Task] = OrderedDict()
        self._active: set[ModelRef] = set()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, task: Task) -> None:
        with self._cond:
            old = self._pending.get(task.ref)
            merged = coalesce(old, task) if old else task
            if merged is None:
                self._pending.pop(task.ref, None)
            else:
                self._pending[task.ref] = merged
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Task | None:
        """The oldest task whose model is idle; None on close or timeout."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                for ref, task in self._pending.items():
                    if ref not in self._active:
                        del self._pending[ref]
                        self._active.add(ref)
                        return task
                if not self._cond.wait(timeout):
                    return None

    def done(self, task: Task) -> None:
        with self._cond:
            self._active.discard(task.ref)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def busy(self, ref: ModelRef) -> bool:
        """True while a task for ``ref`` waits or runs."""
        with self._cond:
            return ref in self._pending or ref in self._active

    def delete_pending(self, ref: ModelRef) -> bool:
        """True when the task waiting for ``ref`` is a delete (what runs for it now is to be undone)."""
        with self._cond:
            pending = self._pending.get(ref)
            return pending is not None and pending.type == TaskType.DELETE

    def depth(self) -> int:
        with self._cond:
            return len(self._pending)

    def idle(self) -> bool:
        with self._cond:
            return not self._pending and not self._active

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is pending or active (tests, graceful shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._active, timeout)
