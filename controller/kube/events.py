"""Kubernetes Events (core/v1) about the objects a controller manages, deduplicated by count.

An Event is created straight away (no GET first: a new Event is the common case). Only when the create
conflicts (the same reason and message about the same object was recorded before) is the existing one
patched to count up; the count comes from a bounded local memory, or one GET after a restart.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from modelferry.controller.kube.client import EVENTS, ConflictError, Kube
from modelferry.errors import ModelferryError
from modelferry.logs import scrub

log = logging.getLogger(__name__)


def now_iso() -> str:
    """RFC 3339 time in UTC, seconds precision (what Kubernetes stores)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_body(obj: dict[str, Any], kind: str, reason: str, message: str, component: str, now: str) -> dict[str, Any]:
    """The Event for ``obj`` (pure); the name is stable per object, reason and message so repeats count up."""
    meta = obj.get("metadata") or {}
    message = scrub(message, meta.get("namespace"))  # messages can quote a pod's failure record
    digest = hashlib.sha256(f"{meta.get('uid')}/{reason}/{message}".encode()).hexdigest()[:10]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name', 'object')}.{digest}", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1000],
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class EventRecorder:
    """Emits Events; a failure to record one is logged, never raised (Events are best effort)."""

    def __init__(self, kube: Kube, component: str = "modelferry-controller", *, remember: int = 4096) -> None:
        self.kube = kube
        self.component = component
        self.remember = remember
        self._counts: OrderedDict[tuple[str, str], int] = OrderedDict()

    def _count(self, key: tuple[str, str], count: int) -> None:
        self._counts[key] = count
        self._counts.move_to_end(key)
        while len(self._counts) > self.remember:
            self._counts.popitem(last=False)

    async def emit(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """Record a ``Normal`` or ``Warning`` Event about ``obj``."""
        now = now_iso()
        body = event_body(obj, kind, reason, message, self.component, now)
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            try:
                await self.kube.create(EVENTS, ns, body)
                self._count((ns, name), 1)
                return
            except ConflictError:
                pass
            count = self._counts.get((ns, name))
            if count is None:
                existing = await self.kube.get(EVENTS, ns, name)
                count = int((existing or {}).get("count") or 1)
            await self.kube.patch(EVENTS, ns, name, {"count": count + 1, "lastTimestamp": now})
            self._count((ns, name), count + 1)
        except ModelferryError as exc:
            log.warning("could not record event %s on %s/%s: %s", reason, ns, name, exc)
