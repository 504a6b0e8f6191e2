"""Writing a custom resource's status: one rule for every reconciler that owns a kind's status."""

from __future__ import annotations

from typing import Any

from modelferry.controller.kube.client import Kube, Resource
from modelferry.controller.kube.conditions import keep_transition_times
from modelferry.controller.kube.watch import Informer, object_key


async def patch_status(
    kube: Kube, resource: Resource, obj: dict[str, Any], status: dict[str, Any], informer: Informer | None
) -> None:
    """Merge-patch ``status`` into ``obj``'s status subresource when it changes; keys it no longer has are
    removed. The informer's cache takes the answer at once, so a reconcile queued before the watch
    event sees it and does not write the same status again."""
    current = obj.get("status") or {}
    status = keep_transition_times(current, status)
    if all(current.get(k) == v for k, v in status.items()) and not (set(current) - set(status)):
        return
    ns, name = object_key(obj)
    body = {"status": {**{k: None for k in current if k not in status}, **status}}
    updated = await kube.patch(resource, ns, name, body, sub="status")
    if informer is not None and updated.get("metadata"):
        updated.setdefault("apiVersion", resource.api_version)
        updated.setdefault("kind", resource.kind)
        informer.remember((ns, name), updated)
