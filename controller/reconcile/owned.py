"""Ensuring the objects a reconciler owns (Jobs, Services, PyTorchJobs, TrainJobs, Deployments): the one home.

For each desired object: create it when missing; when its inputs hash (``modelferry.io/inputs-hash``)
differs, replace it (Jobs: delete and create, their templates are immutable; Deployments and Services:
in place, so Kubernetes rolls them); adopt an object that carries our owner labels but was missing from
the cache; and refuse, with a Warning Event, an object of that name made by someone else (it is never
touched). Deleting removes only what carries our owner labels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from modelferry.controller.kube.client import ConflictError, Resource
from modelferry.controller.kube.ownership import owned_by
from modelferry.controller.reconcile.parts import Caches, Key, Parts
from modelferry.controller.workload.identity import recorded_hash

log = logging.getLogger(__name__)

# Fields the API server allocates once and refuses to change on an update in place.
KEEP_ON_UPDATE = {"Service": ("clusterIP", "clusterIPs")}


@dataclass
class Ensured:
    """The outcome of :meth:`OwnedObjects.ensure`."""

    obj: dict[str, Any] | None  # the live object that matches, or None (being made, or refused)
    created: bool = False  # made (or replaced by a new one) in this call
    refused: dict[str, Any] | None = None  # someone else's object in the way


class OwnedObjects:
    """Create, replace, adopt and delete the objects that one kind's reconciler owns.

    ``caches`` maps each resource to the informers that hold our objects of it (a resource without
    one is read with a GET); an object we wrote goes into its cache at once, so a reconcile queued
    before the watch event sees it. ``in_place``: replace by update (Deployments, Services) rather
    than delete and create (Jobs). ``event_noun``: the noun of the Created/Replaced Events (``Job`` for
    every workload of a Job-like kind) or None for the object's own kind.
    """

    def __init__(
        self,
        parts: Parts,
        kind: str,
        caches: Callable[[], Mapping[Resource, Caches]],
        *,
        in_place: bool = False,
        event_noun: str | None = "Job",
        refused_reason: str = "JobNotManaged",
        recheck_refused: float | None = None,
    ) -> None:
        self.parts = parts
        self.kind = kind
        self.caches = caches
        self.in_place = in_place
        self.event_noun = event_noun
        self.refused_reason = refused_reason
        self.recheck_refused = recheck_refused

    # --- caches --------------------------------------------------------------------------------------
    async def lookup(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """Our object from the caches (a GET for a resource nobody watches). A stale miss is harmless: the
        object's own watch event requeues its owner, which looks again."""
        informers = self.caches().get(resource)
        if not informers:
            return await self.parts.kube.get(resource, namespace, name)
        informer = informers.get(namespace) or informers.get(None)
        return informer.get(namespace, name) if informer else None

    def remember(self, resource: Resource, namespace: str, name: str, obj: dict[str, Any] | None) -> None:
        """Keep a cache current after our own write (the watch event follows)."""
        informers = self.caches().get(resource) or {}
        informer = informers.get(namespace) or informers.get(None)
        if informer is None:
            return
        if obj is None or not obj.get("metadata"):
            informer.cache.pop((namespace, name), None)
        else:
            obj.setdefault("apiVersion", resource.api_version)
            obj.setdefault("kind", resource.kind)
            informer.remember((namespace, name), obj)

    # --- ensure --------------------------------------------------------------------------------------
    async def ensure(
        self, key: Key, owner: dict[str, Any], resource: Resource, desired: dict[str, Any], live: dict[str, Any] | None
    ) -> Ensured:
        """Bring the object ``desired`` names in line with it; ``live`` is what the caches hold."""
        _, ns, owner_name = key
        name = desired["metadata"]["name"]
        if live is not None and recorded_hash(live) == recorded_hash(desired):
            return Ensured(live)
        if live is not None:
            if not owned_by(live, self.kind, owner_name):
                return await self._refuse(key, owner, resource, name, live)
            if self.in_place:
                return await self._update(key, owner, resource, desired, live)
            noun = self.event_noun or resource.kind
            log.info("inputs of %s %s/%s changed: replacing %s %s", self.kind, ns, owner_name, resource.kind, name)
            await self.parts.kube.delete(resource, ns, name)
            self.remember(resource, ns, name, None)
            await self.parts.recorder.emit(
                owner, "Normal", f"{noun}Replaced", f"inputs changed; {noun} {name} replaced"
            )
        try:
            created = await self.parts.kube.create(resource, ns, desired)
        except ConflictError:
            return await self._conflict(key, owner, resource, desired)
        self.remember(resource, ns, name, created)
        noun = self.event_noun or resource.kind
        await self.parts.recorder.emit(owner, "Normal", f"{noun}Created", f"created {noun} {name}")
        return Ensured(created, created=True)

    async def _conflict(self, key: Key, owner: dict[str, Any], resource: Resource, desired: dict[str, Any]) -> Ensured:
        """The name is taken though our caches did not hold it: someone else's, an orphan of ours, or one being
        deleted (our caches hold only what carries our labels)."""
        _, ns, owner_name = key
        name = desired["metadata"]["name"]
        other = await self.parts.kube.get(resource, ns, name)
        if other is not None and not owned_by(other, self.kind, owner_name):
            return await self._refuse(key, owner, resource, name, other)
        if other is not None and not (other.get("metadata") or {}).get("deletionTimestamp"):
            if recorded_hash(other) == recorded_hash(desired):
                log.info("%s %s/%s: adopting %s %s", self.kind, ns, owner_name, resource.kind, name)
                self.remember(resource, ns, name, other)
                return Ensured(other)
            if self.in_place:
                return await self._update(key, owner, resource, desired, other)
        self.parts.queue.add(key, 1.0)  # being deleted, or changed meanwhile: look again
        return Ensured(None)

    async def _refuse(
        self, key: Key, owner: dict[str, Any], resource: Resource, name: str, other: dict[str, Any]
    ) -> Ensured:
        message = f"{resource.kind} {name!r} exists and was not created by modelferry; delete or rename it"
        await self.parts.findings.report(key, owner, [("Warning", self.refused_reason, message)])
        if self.recheck_refused is not None:
            self.parts.queue.add(key, self.recheck_refused)  # its removal is not watched (label-selected informers)
        return Ensured(None, refused=other)

    async def _update(
        self, key: Key, owner: dict[str, Any], resource: Resource, desired: dict[str, Any], live: dict[str, Any]
    ) -> Ensured:
        """Replace in place (PUT at the live resourceVersion), keeping what the API server allocated."""
        _, ns, _ = key
        name = desired["metadata"]["name"]
        body = {**desired, "metadata": {**desired["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]}}
        kept = KEEP_ON_UPDATE.get(resource.kind, ())
        if kept:
            body["spec"] = {**desired["spec"], **{k: v for k, v in (live.get("spec") or {}).items() if k in kept}}
        try:
            replaced = await self.parts.kube.replace(resource, ns, name, body)
        except ConflictError:
            self.parts.queue.add(key, 1.0)  # someone else wrote it first: look again
            return Ensured(live)
        self.remember(resource, ns, name, replaced)
        noun = self.event_noun or resource.kind
        verb = "rolling out" if resource.kind == "Deployment" else "updated"
        await self.parts.recorder.emit(
            owner, "Normal", f"{noun}Updated", f"inputs changed; {verb} {resource.kind} {name}"
        )
        return Ensured(replaced)

    # --- delete --------------------------------------------------------------------------------------
    async def delete(self, resource: Resource, owner_name: str, live: dict[str, Any] | None) -> bool:
        """Delete ``live`` when it is ours (garbage collection may be absent or slow); True when deleted."""
        if live is None or not owned_by(live, self.kind, owner_name):
            return False
        meta = live.get("metadata") or {}
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        log.info("%s %s/%s is gone or changed: deleting %s %s", self.kind, ns, owner_name, resource.kind, name)
        await self.parts.kube.delete(resource, ns or None, name)
        self.remember(resource, ns, name, None)
        return True
