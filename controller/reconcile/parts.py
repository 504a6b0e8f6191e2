"""What the operator hands every kind's reconciler, and what a reconciler offers the operator in return.

The operator owns the watches several kinds read (the managed Jobs and their Pods, the referenced
Secrets) and routes each queue key ``(kind, namespace, name)`` to the reconciler of its kind; a
reconciler owns the watches of its own kind and of what only it reads. Neither reaches into the other:
this protocol is all they share.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from modelferry.controller.config.controller import ControllerSettings
from modelferry.controller.kube.client import Kube
from modelferry.controller.kube.events import EventRecorder
from modelferry.controller.kube.watch import Informer
from modelferry.controller.reconcile.secretindex import ReferencedSecrets
from modelferry.controller.reconcile.workqueue import WorkQueue

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (kind, namespace, name); cluster-scoped kinds have namespace ""
Finding = tuple[str, str, str]  # (Event type, reason, message)
Caches = dict[str | None, Informer]  # one informer per watched namespace (None: all of them)


def cached(informers: Caches, namespace: str, name: str) -> dict[str, Any] | None:
    """The object ``namespace/name`` from the informer that watches its namespace."""
    informer = informers.get(namespace) or informers.get(None)
    return informer.get(namespace, name) if informer else None


def cached_all(informers: Caches, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every cached object, or those of ``namespace``."""
    objs = [obj for informer in informers.values() for obj in informer.items()]
    return [o for o in objs if namespace is None or (o.get("metadata") or {}).get("namespace", "") == namespace]


class Findings:
    """Events for findings that changed since the last reconcile of an object (not one per resync)."""

    def __init__(self, recorder: EventRecorder) -> None:
        self.recorder = recorder
        self._reported: dict[Key, tuple[str, ...]] = {}

    async def report(self, key: Key, obj: dict[str, Any], findings: list[Finding]) -> None:
        signature = tuple(f"{t}/{r}/{m}" for t, r, m in findings)
        if self._reported.get(key) == signature:
            return
        self._reported[key] = signature
        for event_type, reason, message in findings:
            log.info("%s %s/%s: %s: %s", key[0], key[1], key[2], reason, message)
            await self.recorder.emit(obj, event_type, reason, message)

    def forget(self, key: Key) -> None:
        """The object is gone or healthy again: its next finding is reported anew."""
        self._reported.pop(key, None)


class Parts(Protocol):
    """What the operator shares with the reconcilers it routes to."""

    kube: Kube
    settings: ControllerSettings
    recorder: EventRecorder
    findings: Findings
    queue: WorkQueue
    refs: ReferencedSecrets
    informers: list[Informer]  # every watch to start; a reconciler appends its own
    jobs: Caches  # the managed Jobs (label-selected)

    def pods_of(self, namespace: str, job: str) -> list[dict[str, Any]]: ...

    def modelsyncs(self, namespace: str) -> list[dict[str, Any]]: ...

    async def data_connections(self, namespace: str) -> dict[str, dict[str, Any]]: ...


class Reconciler(Protocol):
    """One kind's reconciler: level-triggered and idempotent."""

    kind: str

    async def reconcile(self, namespace: str, name: str) -> None: ...

    def resync(self) -> None:
        """Queue every object of the kind (a watch may have missed something)."""
