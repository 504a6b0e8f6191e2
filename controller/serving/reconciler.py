"""The ModelServer reconciler: ModelServer + what it names -> ``render`` -> Deployment/Service -> status.

A thin adapter around the pure functions of :mod:`modelferry.controller.serving.render` and
:mod:`modelferry.controller.serving.status`. It keeps informers of its own (ModelServers, their Deployments,
Services and pods, the BaseModels, ClusterBaseModels, ModelSyncs and TrainingRuns they name) and
shares the :class:`~modelferry.controller.operator.router.Operator`'s work queue and Event recorder; the
operator only routes ``("ModelServer", ns, name)`` keys here.

Changed inputs replace the Deployment in place (PUT), so Kubernetes rolls it with
``maxUnavailable: 0``; it is never deleted to be recreated. While the model or adapter is not ready,
or the spec cannot work, a running Deployment is kept as it is and the status says why.
"""

from __future__ import annotations

import logging
from typing import Any

from modelferry.controller.kube.client import (
    BASEMODELS,
    CLUSTERBASEMODELS,
    DEPLOYMENTS,
    MODELSERVERS,
    MODELSYNCS,
    PODS,
    SERVICES,
    TRAININGRUNS,
    Resource,
)
from modelferry.controller.kube.events import now_iso
from modelferry.controller.kube.ownership import (
    LABEL_MANAGED_BY,
    LABEL_OWNER_KIND,
    LABEL_OWNER_NAME,
    MANAGED_BY,
    owned_by,
)
from modelferry.controller.kube.watch import Informer, object_key
from modelferry.controller.reconcile.owned import OwnedObjects
from modelferry.controller.reconcile.parts import Key, Parts
from modelferry.controller.reconcile.status import patch_status
from modelferry.controller.serving.inputs import Problem, ServingContext
from modelferry.controller.serving.render import KIND, LABEL_SERVER, RenderResult, render, service_url
from modelferry.controller.serving.status import compute_status
from modelferry.controller.sync.targets import synced_models
from modelferry.errors import ModelferryError
from modelferry.logs import scrub

log = logging.getLogger(__name__)

WARNING_PHASES = ("Degraded", "Failed")


def references(server: dict[str, Any], kind: str, name: str) -> bool:
    """Whether ModelServer ``server`` names the ``kind`` object ``name``."""
    spec = server.get("spec") or {}
    model, adapter = spec.get("model") or {}, spec.get("adapter") or {}
    field = {"BaseModel": "baseModel", "ClusterBaseModel": "clusterBaseModel", "ModelSync": "modelSync"}.get(kind)
    if field:
        return bool(model.get(field) == name)
    return kind == "TrainingRun" and adapter.get("trainingRun") == name


class ServingReconciler:
    """Level-triggered reconcile of ModelServers."""

    kind = KIND

    def __init__(self, op: Parts) -> None:
        self.op = op
        self.kube = op.kube
        self.settings = op.settings.serving
        self.informers: dict[Resource, dict[str | None, Informer]] = {}
        self._last: dict[Key, tuple[str, str]] = {}
        self.owned = OwnedObjects(
            op,
            KIND,
            lambda: {r: self.informers[r] for r in (DEPLOYMENTS, SERVICES)},
            in_place=True,  # Kubernetes rolls a changed Deployment with maxUnavailable: 0
            event_noun=None,
            refused_reason="NotManaged",
            recheck_refused=30.0,  # its removal is not watched (label-selected informers): look again
        )
        owned_selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_OWNER_KIND}={KIND}"
        handlers = {
            MODELSERVERS: (self._on_server, None),
            DEPLOYMENTS: (self._on_owned, owned_selector),
            SERVICES: (self._on_owned, owned_selector),
            PODS: (self._on_owned, LABEL_SERVER),
            BASEMODELS: (self._on_named, None),
            MODELSYNCS: (self._on_named, None),
            TRAININGRUNS: (self._on_named, None),
        }
        namespaces: list[str | None] = list(op.settings.namespaces) or [None]
        for resource, (handler, selector) in handlers.items():
            for ns in namespaces:
                self._add(resource, ns, handler, selector)
        self._add(CLUSTERBASEMODELS, None, self._on_named, None)

    def _add(self, resource: Resource, ns: str | None, handler: Any, selector: str | None) -> None:
        inf = Informer(
            self.kube,
            resource,
            handler,
            namespace=ns,
            label_selector=selector,
            timeout_seconds=self.op.settings.watch_timeout_seconds,
        )
        self.informers.setdefault(resource, {})[ns] = inf
        self.op.informers.append(inf)

    # --- event handlers ------------------------------------------------------------------------------
    def _on_server(self, kind: str, obj: dict[str, Any]) -> None:
        self.op.queue.add((KIND, *object_key(obj)))

    def _on_owned(self, kind: str, obj: dict[str, Any]) -> None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        name = labels.get(LABEL_SERVER) or (
            labels.get(LABEL_OWNER_NAME) if labels.get(LABEL_OWNER_KIND) == KIND else None
        )
        if name:
            self.op.queue.add((KIND, object_key(obj)[0], name))

    def _on_named(self, kind: str, obj: dict[str, Any]) -> None:
        """A model, ModelSync or TrainingRun changed: requeue the ModelServers that name it."""
        ns, name = object_key(obj)
        obj_kind = str(obj.get("kind") or "")
        for server in self._all(MODELSERVERS):
            server_ns = object_key(server)[0]
            if (obj_kind == "ClusterBaseModel" or server_ns == ns) and references(server, obj_kind, name):
                self.op.queue.add((KIND, *object_key(server)))

    def resync(self) -> None:
        for server in self._all(MODELSERVERS):
            self.op.queue.add((KIND, *object_key(server)))

    # --- caches --------------------------------------------------------------------------------------
    def _all(self, resource: Resource, ns: str | None = None) -> list[dict[str, Any]]:
        objs = [o for inf in self.informers.get(resource, {}).values() for o in inf.items()]
        return [o for o in objs if ns is None or object_key(o)[0] == ns]

    def _cached(self, resource: Resource, ns: str, name: str) -> dict[str, Any] | None:
        infs = self.informers.get(resource, {})
        inf = infs.get(ns) or infs.get(None)
        return inf.get(ns, name) if inf else None

    async def _context(self, ns: str) -> ServingContext:
        secrets = await self.op.data_connections(ns)  # the Secret index: no cache of every Secret
        outputs = {
            object_key(run)[1]: str((run.get("status") or {}).get("outputUri"))
            for run in self._all(TRAININGRUNS, ns)
            if (run.get("status") or {}).get("phase") == "Succeeded" and (run.get("status") or {}).get("outputUri")
        }
        s = self.settings
        return ServingContext(
            image=s.image or self.op.settings.job.image,
            serve_image=s.serve_image,
            models_root=s.models_root,
            label_prefix=s.label_prefix,
            run_as_user=s.run_as_user or None,
            cluster_domain=s.cluster_domain,
            base_models={object_key(b)[1]: b for b in self._all(BASEMODELS, ns)},
            cluster_base_models={object_key(b)[1]: b for b in self._all(CLUSTERBASEMODELS)},
            model_syncs=synced_models(self._all(MODELSYNCS, ns), secrets),
            training_outputs=outputs,
        )

    # --- reconcile -----------------------------------------------------------------------------------
    async def reconcile(self, ns: str, name: str) -> None:
        """Bring one ModelServer's Deployment, Service and status in line with its spec."""
        key: Key = (KIND, ns, name)
        server = self._cached(MODELSERVERS, ns, name)
        if server is None:
            for resource in (DEPLOYMENTS, SERVICES):  # garbage collection may be absent or slow
                await self.owned.delete(resource, name, self._cached(resource, ns, name))
            self._last.pop(key, None)
            return
        if (server.get("metadata") or {}).get("deletionTimestamp"):
            return
        server.setdefault("apiVersion", MODELSERVERS.api_version)
        server.setdefault("kind", KIND)
        ctx = await self._context(ns)
        result = render(server, ctx)
        deployment = self._cached(DEPLOYMENTS, ns, name)
        if result.problem is None:
            desired_dep, desired_svc = result.objects
            try:
                deployment = (await self.owned.ensure(key, server, DEPLOYMENTS, desired_dep, deployment)).obj
                await self.owned.ensure(key, server, SERVICES, desired_svc, self._cached(SERVICES, ns, name))
            except ModelferryError as exc:
                if exc.retryable:
                    raise
                refused = Problem("Rejected", f"the API server refused the rendered objects: {scrub(str(exc))}")
                result = RenderResult(problem=refused, source=result.source, port=result.port)
        elif deployment is not None and not owned_by(deployment, KIND, name):
            deployment = None
        pods = [
            p for p in self._all(PODS, ns) if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_SERVER) == name
        ]
        nodes_ready = None
        source = result.source
        if source is not None and source.ref is not None:
            res = BASEMODELS if source.kind == "BaseModel" else CLUSTERBASEMODELS
            model = self._cached(res, source.ref.namespace, source.ref.name) or {}
            nodes_ready = len((model.get("status") or {}).get("nodesReady") or [])
        port = result.port or self._live_port(deployment)
        url = service_url(name, ns, port, ctx) if port else ""
        status = compute_status(server, result, deployment, pods, nodes_ready=nodes_ready, url=url, now=now_iso())
        await self._events(key, server, status)
        await self._write_status(server, status)

    @staticmethod
    def _live_port(deployment: dict[str, Any] | None) -> int:
        containers = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get(
            "containers"
        ) or []
        ports = (containers[0].get("ports") or [{}]) if containers else [{}]
        return int(ports[0].get("containerPort") or 0)

    async def _events(self, key: Key, server: dict[str, Any], status: dict[str, Any]) -> None:
        """One Event per transition of phase or of the Degraded reason (not one per reconcile)."""
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        model = next(c for c in status["conditions"] if c["type"] == "ModelAvailable")
        reason = degraded["reason"] if degraded["status"] == "True" else model["reason"]
        now = (status["phase"], reason)
        if self._last.get(key) == now:
            return
        self._last[key] = now
        kind = "Warning" if status["phase"] in WARNING_PHASES or degraded["status"] == "True" else "Normal"
        message = status.get("message") or status["phase"]
        if status["phase"] == "Ready" and status.get("url"):
            message = f"{message}; serving at {status['url']}"
        await self.op.recorder.emit(server, kind, status["phase"] if kind == "Normal" else reason, message)

    async def _write_status(self, server: dict[str, Any], status: dict[str, Any]) -> None:
        ns, _ = object_key(server)
        infs = self.informers[MODELSERVERS]
        await patch_status(self.kube, MODELSERVERS, server, status, infs.get(ns) or infs.get(None))
