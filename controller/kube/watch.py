"""List-then-watch with a local cache: relist on 410 Gone, reconnect after errors, report deletions.

An :class:`Informer` keeps the current objects of one resource in memory and calls ``handler(type,
obj)`` for every change (``ADDED``, ``MODIFIED``, ``DELETED``); after a relist it synthesises
``DELETED`` for objects that vanished while no watch was open, so nothing is missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from controller.kube.client import GoneError, Kube, Resource
from modelferry.errors import ModelferryError

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], Awaitable[None] | None]


def object_key(obj: dict[str, Any]) -> tuple[str, str]:
    """``(namespace, name)`` of an object."""
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Informer:
    """One resource in one namespace (or all when ``namespace`` is None), cached and watched."""

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        handler: Handler,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        timeout_seconds: int = 240,
        reconnect_seconds: float = 1.0,
        max_reconnect_seconds: float = 30.0,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.handler = handler
        self.namespace = namespace
        self.label_selector = label_selector
        self.timeout_seconds = timeout_seconds
        self.reconnect_seconds = reconnect_seconds
        self.max_reconnect_seconds = max_reconnect_seconds
        self.cache: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.relists = 0

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The cached object or None."""
        return self.cache.get((namespace, name))

    def items(self) -> list[dict[str, Any]]:
        return list(self.cache.values())

    async def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        result = self.handler(kind, obj)
        if result is not None:
            await result

    async def relist(self) -> str:
        """List everything, diff against the cache, emit the differences; returns the resourceVersion."""
        items, rv = await self.kube.list(self.resource, self.namespace, label_selector=self.label_selector)
        self.relists += 1
        fresh = {object_key(o): o for o in items}
        for key in list(self.cache):
            if key not in fresh:
                gone = self.cache.pop(key)
                await self._emit("DELETED", gone)
        for key, obj in fresh.items():
            old = self.cache.get(key)
            self.cache[key] = obj
            if old is None:
                await self._emit("ADDED", obj)
            elif (old.get("metadata") or {}).get("resourceVersion") != (obj.get("metadata") or {}).get(
                "resourceVersion"
            ):
                await self._emit("MODIFIED", obj)
        self.synced.set()
        return rv

    async def run(self) -> None:
        """Forever: list, then watch from the list's resourceVersion; relist on 410; back off on errors."""
        delay = self.reconnect_seconds
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self.relist()
                async for kind, obj in self.kube.watch(
                    self.resource,
                    self.namespace,
                    rv,
                    timeout_seconds=self.timeout_seconds,
                    label_selector=self.label_selector,
                ):
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if kind == "BOOKMARK":
                        continue
                    key = object_key(obj)
                    if kind == "DELETED":
                        self.cache.pop(key, None)
                    else:
                        self.cache[key] = obj
                    await self._emit(kind, obj)
                delay = self.reconnect_seconds  # the server closed a healthy watch: reconnect at once
            except GoneError:
                log.info("watch of %s expired (410 Gone): relisting", self.resource.plural)
                rv = None
            except ModelferryError as exc:
                log.warning("watch of %s failed: %s; retrying in %.1fs", self.resource.plural, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_reconnect_seconds)
                rv = None
