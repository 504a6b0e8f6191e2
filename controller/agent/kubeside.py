"""The agent's Kubernetes side: watches the model kinds, feeds the gopher, publishes ConfigMap and labels.

Runs on one asyncio loop; the gopher's worker threads report through
:meth:`NodeAgent.publish`, which only records the entry and wakes the loop. The
ConfigMap and the node labels are reconciled from that in-memory state after
every change and every ``reconcile_interval``, so someone deleting or editing
them is healed without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from modelferry.controller.agent import resources as node_resources
from modelferry.controller.agent.disk import stale_dirs
from modelferry.controller.agent.entries import ModelEntry, ModelStatus, data_patch, desired_data, labels_patch
from modelferry.controller.agent.gopher import Gopher, storage_of
from modelferry.controller.agent.metrics import AgentMetrics
from modelferry.controller.agent.secretcreds import credentials_from_secret
from modelferry.controller.agent.selection import node_wants
from modelferry.controller.agent.settings import AgentSettings
from modelferry.controller.agent.tasks import ModelRef, Task, TaskType, decide, spec_fingerprint
from modelferry.controller.kube.client import CONFIGMAPS, NODES, SECRETS, ConflictError, Kube, Resource
from modelferry.controller.kube.watch import Backoff, Informer, object_key
from modelferry.errors import ModelferryError, NotFoundError, RetryableError, UsageError
from modelferry.settings import Credentials

log = logging.getLogger(__name__)

CONFIGMAP_LABELS = {"app.kubernetes.io/name": "modelferry", "app.kubernetes.io/component": "model-agent"}
CONFIGMAP_SELECTOR = "app.kubernetes.io/component=model-agent"
# What OME's model agent puts on its per-node ConfigMap (OME's controller lists them by the first label).
OME_CONFIGMAP_LABELS = {"models.ome/basemodel-status": "true"}
OME_CONFIGMAP_ANNOTATIONS = {"models.ome.io/managed-by": "model-agent"}


def configmap_meta(node: str, watch_ome: bool) -> tuple[dict[str, str], dict[str, str]]:
    """Labels and annotations of the node's ConfigMap: ours, plus OME's with ``watch_ome``."""
    if not watch_ome:
        return dict(CONFIGMAP_LABELS), {}
    labels = {**CONFIGMAP_LABELS, **OME_CONFIGMAP_LABELS, "node": node}
    return labels, {**OME_CONFIGMAP_ANNOTATIONS, "models.ome.io/node-name": node}


def model_resources(group: str, version: str) -> tuple[Resource, Resource]:
    return (
        Resource(group, version, "basemodels", "BaseModel"),
        Resource(group, version, "clusterbasemodels", "ClusterBaseModel", namespaced=False),
    )


class NodeAgent:
    """One node's agent: informers, decisions, publishing, healing and cleanup."""

    def __init__(self, settings: AgentSettings, kube: Kube, gopher: Gopher, metrics: AgentMetrics) -> None:
        self.settings = settings
        self.opts = settings.agent
        self.kube = kube
        self.gopher = gopher
        self.metrics = metrics
        self.root = Path(self.opts.models_root)
        self.entries: dict[ModelRef, ModelEntry] = {}
        self.credentials: dict[ModelRef, Credentials] = {}
        self.node: dict[str, Any] = {}
        self.last_seen: dict[ModelRef, tuple[str, bool]] = {}
        self._lock = threading.Lock()
        self._dirty = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.backoff = Backoff(self.opts.api_backoff_seconds, self.opts.api_backoff_max_seconds)
        common: dict[str, Any] = {"backoff": self.backoff, "timeout_seconds": self.opts.watch_timeout_seconds}
        models = model_resources(*settings.group_version())  # BaseModels, ClusterBaseModels
        self.informers = [Informer(kube, resource, self.on_event, **common) for resource in models]
        self.failures = 0  # failed publishing passes in all (each is retried after a backoff)
        gopher.sink = self
        gopher.credentials_for = self.credentials_for
        self.api_ok = False

    # --- state shared with the worker threads --------------------------------------------------

    def publish(self, entry: ModelEntry) -> None:
        """Called by gopher workers (any thread)."""
        with self._lock:
            if entry.status == ModelStatus.DELETED:
                self.entries.pop(entry.ref, None)
            else:
                self.entries[entry.ref] = entry
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._dirty.set)

    def credentials_for(self, task: Task) -> Credentials:
        return self.credentials.get(task.ref, self.settings.source)

    # --- decisions -----------------------------------------------------------------------------

    async def on_event(
        self, kind: str, obj: dict[str, Any], *, force: bool = False, current: Callable[[], bool] | None = None
    ) -> None:
        """Decide what ``obj`` needs on this node and queue it.

        ``current`` (a resync's evaluation) says whether ``obj`` is still the cached version: a watch
        event handled while this one waited (a deletion, an edit) must not be undone by a stale task.
        """
        ref = ModelRef.of(obj)
        deleted = kind == "DELETED" or bool((obj.get("metadata") or {}).get("deletionTimestamp"))
        try:
            wanted = not deleted and node_wants(storage_of(obj), self.node)
        except UsageError as exc:
            self.publish(ModelEntry(ref, ModelStatus.FAILED, reason=exc.reason, message=str(exc)))
            return
        seen = (spec_fingerprint(obj), wanted)
        if not force and not deleted and self.last_seen.get(ref) == seen:
            return  # a status-only change (the controller's aggregation): nothing to do
        self.last_seen[ref] = seen
        if deleted:
            self.last_seen.pop(ref, None)
        held = await asyncio.to_thread(self.gopher.held_fingerprint, ref, obj)
        if current is not None and not current():
            return  # the watch brought a newer version (or the deletion) meanwhile and handled it
        queue = self.gopher.queue
        task = decide(
            obj,
            wanted=wanted,
            held_fingerprint=held,
            deleted=deleted,
            in_flight=queue.busy(ref),
            delete_queued=queue.delete_pending(ref),
        )
        if task is None:
            if not wanted and ref in self.entries:
                self.publish(ModelEntry(ref, ModelStatus.DELETED))
            elif wanted and held is not None and ref not in self.entries:
                # Complete on disk from an earlier run: report it (the gopher parses the metadata).
                task = decide(obj, wanted=True, held_fingerprint=None)
            if task is None:
                return
        key = storage_of(obj).get("key")
        if key and task.type != TaskType.DELETE and not await self._load_credentials(ref, str(key)):
            return
        if current is not None and not current():
            return
        log.info("queued %s for %s", task.type, ref)
        self.gopher.queue.put(task)
        if task.type == TaskType.DELETE:
            self.gopher.abandon(ref)  # a download running now stops; the delete then removes what it left
        self.metrics.queue_depth.set(self.gopher.queue.depth())

    async def _load_credentials(self, ref: ModelRef, secret_name: str) -> bool:
        """Load the model's Secret; False (the model reported Failed) when its values are unusable."""
        namespace = ref.namespace or self.opts.namespace
        try:
            secret = await self.kube.get(SECRETS, namespace, secret_name)
        except ModelferryError as exc:
            log.warning("cannot read Secret %s/%s for %s: %s", namespace, secret_name, ref, exc)
            return True
        if secret is None:
            log.warning(
                "Secret %s/%s named by %s does not exist; using the agent's credentials", namespace, secret_name, ref
            )
            return True
        try:
            self.credentials[ref] = credentials_from_secret(
                secret, self.settings.source, where=f"{namespace}/{secret_name}"
            )
        except ModelferryError as exc:
            log.error("model %s: %s", ref, exc)
            self.publish(ModelEntry(ref, ModelStatus.FAILED, reason=exc.reason, message=str(exc)))
            return False
        return True

    async def resync(self) -> None:
        """Re-evaluate every model (node labels may have changed; failed downloads are retried)."""
        await self.refresh_node()
        for informer in self.informers:
            for key in [object_key(obj) for obj in informer.items()]:
                obj = informer.get(*key)  # the version cached when its turn comes, not when the resync began
                if obj is not None:
                    await self.on_event("MODIFIED", obj, force=True, current=_still_cached(informer, key, obj))

    async def refresh_node(self) -> None:
        node = await self.kube.get(NODES, None, self.opts.node_name)
        if node is None:
            raise NotFoundError(
                f"node {self.opts.node_name} does not exist", hint="Set NODE_NAME from the downward API"
            )
        self.node = node

    # --- publishing ----------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Heal the ConfigMap and the node labels, refresh resource metrics."""
        res = await asyncio.to_thread(node_resources.collect, self.root)
        self.metrics.record_resources(res)
        with self._lock:
            entries = dict(self.entries)
        for status in ModelStatus:
            self.metrics.models.labels(str(status)).set(sum(1 for e in entries.values() if e.status == status))
        desired = desired_data(entries, res)
        for attempt in range(self.opts.label_retries + 1):
            try:
                await self._reconcile_configmap(desired)
                await self._reconcile_labels({ref: e.status for ref, e in entries.items()})
                self.api_ok = True
                return
            except ConflictError:
                log.info("conflict while publishing node state (attempt %s); retrying", attempt + 1)
        log.warning("node state not published after %s conflicts; next pass retries", self.opts.label_retries + 1)

    async def _reconcile_configmap(self, desired: dict[str, str]) -> None:
        name, ns = self.opts.node_name, self.opts.namespace
        want_labels, want_annotations = configmap_meta(name, self.opts.watch_ome)
        current = await self.kube.get(CONFIGMAPS, ns, name)
        if current is None:
            created = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": ns, "labels": want_labels, "annotations": want_annotations},
                "data": desired,
            }
            async with self._counted("create"):
                await self.kube.create(CONFIGMAPS, ns, created)
            log.info("created ConfigMap %s/%s", ns, name)
            return
        patch = data_patch(current.get("data"), desired)
        meta_now = current.get("metadata") or {}
        labels, annotations = meta_now.get("labels") or {}, meta_now.get("annotations") or {}
        meta_patch = {k: v for k, v in want_labels.items() if labels.get(k) != v}
        annotations_patch = {k: v for k, v in want_annotations.items() if annotations.get(k) != v}
        if patch or meta_patch or annotations_patch:
            meta: dict[str, Any] = {"resourceVersion": meta_now.get("resourceVersion")}
            if meta_patch:
                meta["labels"] = meta_patch
            if annotations_patch:
                meta["annotations"] = annotations_patch
            async with self._counted("update"):
                await self.kube.patch(CONFIGMAPS, ns, name, {"metadata": meta, "data": patch or {}})
            log.info("healed ConfigMap %s/%s (%s keys changed)", ns, name, len(patch or {}))

    @contextlib.asynccontextmanager
    async def _counted(self, operation: str) -> AsyncIterator[None]:
        """Count a ConfigMap call as OME's model_agent_configmap_operations_total{operation,result}."""
        try:
            yield
        except BaseException:
            self.metrics.configmap_operation(operation, ok=False)
            raise
        self.metrics.configmap_operation(operation, ok=True)

    async def _reconcile_labels(self, states: dict[ModelRef, ModelStatus]) -> None:
        node = await self.kube.get(NODES, None, self.opts.node_name)
        if node is None:
            return
        self.node = node
        patch = labels_patch(self.settings.label_prefix(), (node.get("metadata") or {}).get("labels"), states)
        if patch:
            rv = (node.get("metadata") or {}).get("resourceVersion")
            await self.kube.patch(
                NODES, None, self.opts.node_name, {"metadata": {"resourceVersion": rv, "labels": patch}}
            )
            log.info("updated %s model labels on node %s", len(patch), self.opts.node_name)

    # --- cleanup -------------------------------------------------------------------------------

    def wanted_dirs(self) -> set[Path]:
        out = set()
        for informer in self.informers:
            for obj in informer.items():
                ref = ModelRef.of(obj)
                try:
                    if node_wants(storage_of(obj), self.node):
                        out.add(self.gopher.placement(ref, obj).final)
                except ModelferryError:
                    continue
        return out

    async def cleanup(self) -> int:
        """Remove model directories the agent wrote that no model wants any more (after a full sync only)."""
        if self.opts.read_only or not all(i.synced.is_set() for i in self.informers):
            return 0
        removed = 0
        for directory in stale_dirs(self.root, self.wanted_dirs()):
            log.info("removing %s: no model on this node wants it", directory)
            await asyncio.to_thread(shutil.rmtree, directory, True)
            self.metrics.cleanups.labels("unwanted").inc()
            removed += 1
        return removed

    # --- main loop -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: watch, reconcile on change and periodically, resync, clean up.

        API faults never end it: a failed pass is retried after a backoff with jitter (the server's
        ``Retry-After`` when it sends one), and the watches resume on their own.
        """
        self._loop = asyncio.get_running_loop()
        if not await until_api(self.refresh_node, stop, self.backoff, "reading this node"):
            return
        self.gopher.start()
        tasks = [asyncio.create_task(i.run()) for i in self.informers]
        next_resync = self._loop.time() + self.opts.resync_interval
        self._dirty.set()  # publish the node's state (and resources) at once
        attempt = 0
        wait = self.opts.reconcile_interval
        try:
            while not stop.is_set():
                await self._wait(stop, wait)
                self._dirty.clear()
                try:
                    if self._loop.time() >= next_resync:
                        await self.resync()
                        next_resync = self._loop.time() + self.opts.resync_interval
                        await self.cleanup()
                    await self.reconcile()
                    attempt, wait = 0, self.opts.reconcile_interval
                except ModelferryError as exc:
                    self.api_ok = False
                    self.failures += 1
                    wait = self.backoff.delay(attempt, getattr(exc, "retry_after", None))
                    attempt += 1
                    log.warning("agent pass failed, retrying in %.1fs: %s", wait, exc)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(self.gopher.stop)

    async def _wait(self, stop: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.create_task(self._dirty.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


async def until_api(call: Callable[[], Awaitable[Any]], stop: asyncio.Event, backoff: Backoff, what: str) -> bool:
    """Run ``call`` until it succeeds (retryable errors wait a backoff); False when ``stop`` came first."""
    attempt = 0
    while not stop.is_set():
        try:
            await call()
            return True
        except RetryableError as exc:
            delay = backoff.delay(attempt, exc.retry_after)
            attempt += 1
            log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
    return False


def _still_cached(informer: Informer, key: tuple[str, str], obj: dict[str, Any]) -> Callable[[], bool]:
    """Whether ``obj`` is still what ``informer`` holds under ``key`` (each watch event caches a new dict)."""
    return lambda: informer.get(*key) is obj
