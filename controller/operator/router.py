"""The operator: watch events -> queue keys -> the reconciler of each key's kind.

It owns only the watches that several kinds read (the managed Jobs and their Pods, the referenced
Secrets) and routes their events to the owner's key; every kind's reconciler owns the watches of its
own kind. :meth:`Operator.reconcile` counts started and finished reconciles per kind and per key, so a
test can wait for "a reconcile that saw this change has finished" instead of sleeping.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Hashable
from typing import Any

from modelferry.controller.config.controller import ControllerSettings
from modelferry.controller.kube.client import JOBS, PODS, Kube
from modelferry.controller.kube.events import EventRecorder
from modelferry.controller.kube.ownership import LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, MANAGED_BY
from modelferry.controller.kube.watch import Backoff, Informer, object_key
from modelferry.controller.operator.nodeagent import NodeAgentReconciler
from modelferry.controller.reconcile.parts import Caches, Findings, Key, Reconciler
from modelferry.controller.reconcile.secretindex import ReferencedSecrets
from modelferry.controller.reconcile.workqueue import WorkQueue
from modelferry.controller.serving.reconciler import ServingReconciler
from modelferry.controller.sync.modelsync_reconciler import ModelSyncReconciler
from modelferry.controller.sync.secret_reconciler import SecretModeReconciler
from modelferry.controller.training.reconciler import TrainingReconciler

POD_READERS = ("ModelSync", "TrainingRun")  # the kinds whose status comes from their Job's pods


class Operator:
    """Holds the shared informers, the queue and one reconciler per kind; implements ``reconcile.parts.Parts``."""

    def __init__(self, kube: Kube, settings: ControllerSettings, recorder: EventRecorder | None = None) -> None:
        self.kube = kube
        self.settings = settings
        self.recorder = recorder or EventRecorder(kube)
        self.findings = Findings(self.recorder)
        self.queue = WorkQueue(backoff_base=settings.backoff_base, backoff_max=settings.backoff_max)
        self.informers: list[Informer] = []
        self.jobs: Caches = {}
        self.pods: Caches = {}
        # Reconciles started (``reconciles``) and finished, per kind and per key: a test waits until a key has
        # finished more reconciles than it had started once a change was in the caches (reconciles of one key
        # never overlap, so the next one saw the change) instead of sleeping.
        self.reconciles: dict[str, int] = {}
        self.finished: Counter[str] = Counter()
        self.started_keys: Counter[Key] = Counter()
        self.finished_keys: Counter[Key] = Counter()
        namespaces: list[str | None] = list(settings.namespaces) or [None]
        backoff = Backoff(settings.watch_backoff_seconds, settings.watch_backoff_max_seconds)
        managed = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        for ns in namespaces:
            common: dict[str, Any] = {"namespace": ns, "timeout_seconds": settings.watch_timeout_seconds}
            self.jobs[ns] = Informer(kube, JOBS, self._on_job, label_selector=managed, backoff=backoff, **common)
            self.pods[ns] = Informer(kube, PODS, self._on_pod, label_selector=managed, backoff=backoff, **common)
            self.informers += [self.jobs[ns], self.pods[ns]]
        # Referenced Secrets are listed once the objects that name them are known (see process).
        self.refs = ReferencedSecrets(
            kube,
            namespaces,
            self._on_referenced,
            timeout_seconds=settings.watch_timeout_seconds,
            page_size=settings.secret_page_size,
            backoff=backoff,
        )
        self.dependent: list[Informer] = list(self.refs.informers.values())
        self.secrets = SecretModeReconciler(self, namespaces, backoff)
        self.modelsync = ModelSyncReconciler(self, namespaces, backoff)
        self.training = TrainingReconciler(self) if settings.training.enabled else None
        self.serving = ServingReconciler(self) if settings.serving.enabled else None
        self.node_agents = NodeAgentReconciler(self) if settings.node_agent.enabled else None
        kinds: list[Reconciler | None] = [self.secrets, self.modelsync, self.training, self.serving, self.node_agents]
        self.reconcilers: dict[str, Reconciler] = {r.kind: r for r in kinds if r is not None}
        if self.training is not None:
            self.modelsync.listeners.append(self.training.on_modelsync)

    # --- what reconcilers read from the shared caches (reconcile.parts.Parts) ------------------------
    def pods_of(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The cached Pods of Job ``job`` (from the one label-selected Pod watch)."""
        informer = self.pods.get(namespace) or self.pods.get(None)
        if informer is None:
            return []
        return [
            p
            for p in informer.items()
            if object_key(p)[0] == namespace and ((p.get("metadata") or {}).get("labels") or {}).get("job-name") == job
        ]

    def modelsyncs(self, namespace: str) -> list[dict[str, Any]]:
        return self.modelsync.items(namespace)

    async def data_connections(self, namespace: str) -> dict[str, dict[str, Any]]:
        """The data connections named by the ModelSyncs of ``namespace`` (indexed by them; a GET the first time only)."""
        names = {
            str(connection)
            for m in self.modelsyncs(namespace)
            if (connection := ((m.get("spec") or {}).get("target") or {}).get("dataConnection"))
        }
        found = await self.refs.many(namespace, names)
        return {n: s for n, s in found.items() if s is not None}

    # --- routing: every change to the keys it affects --------------------------------------------------
    def _on_job(self, kind: str, obj: dict[str, Any]) -> None:
        """A managed Job changed: requeue its owner (its labels name it)."""
        self._requeue_owner(obj, self.reconcilers)

    def _on_pod(self, kind: str, obj: dict[str, Any]) -> None:
        """A managed Job's Pod changed: requeue its owner when the owner reads pods (Secret mode does not)."""
        self._requeue_owner(obj, POD_READERS)

    def _requeue_owner(self, obj: dict[str, Any], kinds: Collection[str]) -> None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        owner_kind, owner_name = labels.get(LABEL_OWNER_KIND), labels.get(LABEL_OWNER_NAME)
        if owner_kind in kinds and owner_kind in self.reconcilers and owner_name:
            self.queue.add((owner_kind, object_key(obj)[0], owner_name))

    def _on_referenced(self, namespace: str, name: str) -> None:
        """A data connection or credentials Secret changed: requeue exactly the objects that read it."""
        for key in self.refs.index.readers(namespace, name):
            self.queue.add(key)

    def resync(self) -> None:
        """Queue every known object (level triggering catches anything a watch missed)."""
        for reconciler in self.reconcilers.values():
            reconciler.resync()

    async def reconcile(self, key: Hashable) -> None:
        """Bring one object in line with its inputs: the reconciler of its kind does it."""
        if not (isinstance(key, tuple) and len(key) == 3):
            return
        kind, ns, name = (str(part) for part in key)
        reconciler = self.reconcilers.get(kind)
        if reconciler is None:
            return
        self.reconciles[kind] = self.reconciles.get(kind, 0) + 1
        self.started_keys[(kind, ns, name)] += 1
        try:
            await reconciler.reconcile(ns, name)
        finally:
            self.finished[kind] += 1
            self.finished_keys[(kind, ns, name)] += 1
