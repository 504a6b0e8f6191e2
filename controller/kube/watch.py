"""List-then-watch with a local cache: resume after faults, relist on 410 Gone, report deletions.

An :class:`Informer` keeps the current objects of one resource in memory and calls ``handler(type,
obj)`` for every change (``ADDED``, ``MODIFIED``, ``DELETED``); after a relist it synthesises
``DELETED`` for objects that vanished while no watch was open, so nothing is missed.

Faults are normal here: a cut stream, a refused connection, a timeout, a 5xx or a 429 make the informer
wait (exponential backoff with jitter, or the server's ``Retry-After``) and reconnect *from the last
resourceVersion it saw* (bookmarks keep that fresh); only 410 Gone costs a relist. :meth:`Informer.run`
never returns and never raises: nothing a watch meets ends the process.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from modelferry.controller.kube.client import GoneError, Kube, Resource
from modelferry.errors import ModelferryError, RetryableError

log = logging.getLogger(__name__)
TOMBSTONES = 4096  # deleted objects remembered by name and uid, newest first (see Informer._gone)

Handler = Callable[[str, dict[str, Any]], Awaitable[None] | None]
Keep = Callable[[dict[str, Any]], bool]


def object_key(obj: dict[str, Any]) -> tuple[str, str]:
    """``(namespace, name)`` of an object."""
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def uid(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def resource_version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when ``a`` is a later version of the object than ``b`` (see :func:`later_version`)."""
    return later_version(resource_version(a), resource_version(b))


def later_version(ra: str, rb: str) -> bool:
    """True when resourceVersion ``ra`` is later than ``rb``.

    resourceVersions are opaque by contract; etcd-backed servers hand out revision numbers, which order.
    Anything else is never called later (the caller's copy wins, as before).
    """
    return ra.isdigit() and rb.isdigit() and int(ra) > int(rb)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt ``n`` waits ``min(max, base * 2**n)`` times 1 to 1+jitter."""

    base: float = 0.8
    maximum: float = 30.0
    jitter: float = 1.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        wait = min(self.maximum, self.base * float(2 ** min(attempt, 30)))
        wait = min(self.maximum, wait * (1 + self.jitter * random.random()))  # noqa: S311 - not cryptography
        return max(wait, retry_after or 0.0)


class Informer:
    """One resource in one namespace (or all when ``namespace`` is None), cached and watched.

    ``keep`` narrows the cache to the objects it accepts (a name index, say): the others stream past
    without being stored or reported, and an object that stops being kept is reported ``DELETED``.
    ``page_size`` lists in pages, so a relist never holds the whole collection at once. ``on_relist`` is
    called as a relist starts and returns what to call once it has ended.
    """

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        handler: Handler,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        keep: Keep | None = None,
        on_relist: Callable[[], Callable[[], None]] | None = None,
        page_size: int = 0,
        timeout_seconds: int = 240,
        backoff: Backoff | None = None,
        quick_close_seconds: float = 1.0,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.handler = handler
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.keep = keep
        self.on_relist = on_relist
        self.page_size = page_size
        self.timeout_seconds = timeout_seconds
        self.backoff = backoff or Backoff()
        self.quick_close_seconds = quick_close_seconds
        self.cache: dict[tuple[str, str], dict[str, Any]] = {}
        # uids of objects seen deleted, by name (the newest TOMBSTONES): a late answer to our own write
        # or a GET that was in flight must not bring one back.
        self._gone: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._written_in_relist: set[tuple[str, str]] | None = None  # keys cached by us while a relist runs
        self.synced = asyncio.Event()
        self.relists = 0
        self.failures = 0  # failed list/watch attempts in all
        self.resumes = 0  # watches reopened from a resourceVersion after a failure (no relist)
        self.last_error: str | None = None
        self.resource_version = ""

    @property
    def name(self) -> str:
        scope = self.namespace or "all"
        return f"{self.resource.plural}/{scope}" + (f"[{self.field_selector}]" if self.field_selector else "")

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The cached object or None."""
        return self.cache.get((namespace, name))

    def remember(self, key: tuple[str, str], obj: dict[str, Any]) -> None:
        """Cache the answer to our own write, so a reconcile queued before its watch event sees it.

        The answer can arrive after the watch already brought a newer version of the same object (someone
        else's write right after ours: a Job's status, a user's edit). That newer version is kept: putting
        ours back would hide the change, and its event has been handled already, so nothing would look again.
        """
        cached = self.cache.get(key)
        if cached is not None and uid(cached) == uid(obj) and newer(cached, obj):
            return
        if self.deleted(key, obj):
            return  # the watch already reported it deleted: caching it would bring it back
        self._cache_ours(key, obj)

    def deleted(self, key: tuple[str, str], obj: dict[str, Any]) -> bool:
        """True when the watch or a relist reported this very object (same uid) deleted."""
        return bool(uid(obj)) and self._gone.get(key) == uid(obj)

    def _cache_ours(self, key: tuple[str, str], obj: dict[str, Any]) -> None:
        """Cache an object we got outside the watch (an answer, a GET); a running relist must not sweep it."""
        self.cache[key] = self._slim(obj)
        if self._written_in_relist is not None:
            self._written_in_relist.add(key)

    def _bury(self, key: tuple[str, str], obj: dict[str, Any]) -> None:
        if uid(obj):
            self._gone[key] = uid(obj)
            self._gone.move_to_end(key)
            while len(self._gone) > TOMBSTONES:
                self._gone.popitem(last=False)

    def items(self) -> list[dict[str, Any]]:
        return list(self.cache.values())

    def _kept(self, obj: dict[str, Any]) -> bool:
        return self.keep is None or self.keep(obj)

    @staticmethod
    def _slim(obj: dict[str, Any]) -> dict[str, Any]:
        (obj.get("metadata") or {}).pop("managedFields", None)  # often the bulk of an object; never read
        return obj

    async def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        result = self.handler(kind, obj)
        if result is not None:
            await result

    async def relist(self) -> str:
        """List everything (in pages), diff against the cache, emit the differences; returns the resourceVersion."""
        fresh: dict[tuple[str, str], dict[str, Any]] = {}
        listed_keys: set[tuple[str, str]] = set()  # every listed object, kept or not
        listed = self.on_relist() if self.on_relist is not None else None
        written: set[tuple[str, str]] = set()
        self._written_in_relist = written
        try:
            rv = await self._list_into(fresh, listed_keys)
            self.relists += 1
            for key in list(self.cache):
                if key not in fresh and not (key in written and self._outlives_list(key, listed_keys, rv)):
                    gone = self.cache.pop(key)
                    self._bury(key, gone)
                    await self._emit("DELETED", gone)
            for key, obj in fresh.items():
                old = self.cache.get(key)
                if key in written and old is not None and uid(old) == uid(obj) and newer(old, obj):
                    continue  # ours is newer than the list's; the watch from the list's version follows it
                self.cache[key] = obj
                if old is None:
                    await self._emit("ADDED", obj)
                elif resource_version(old) != resource_version(obj):
                    await self._emit("MODIFIED", obj)
        finally:
            self._written_in_relist = None
        self.resource_version = rv
        if listed is not None:
            listed()
        self.synced.set()
        return rv

    def _outlives_list(self, key: tuple[str, str], listed_keys: set[tuple[str, str]], list_rv: str) -> bool:
        """Whether an object we cached while the relist ran stays although the list's kept objects lack it.

        It stays when the list holds it but ``keep`` left it out as its page went by (it became wanted
        since, as a Secret does once a ModelSync names it), or when it is newer than the list (created
        after it: the watch from the list's version brings what follows). An older one absent from the
        list was deleted before the list was taken.
        """
        if key in listed_keys:
            return True
        ours = self.cache.get(key)
        return ours is not None and not later_version(list_rv, resource_version(ours))

    async def _list_into(self, fresh: dict[tuple[str, str], dict[str, Any]], listed: set[tuple[str, str]]) -> str:
        """Every kept object, page by page, into ``fresh`` (every key into ``listed``); the list's resourceVersion."""
        rv = ""
        async for items, page_rv in self.kube.list_pages(
            self.resource,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            limit=self.page_size,
        ):
            rv = rv or page_rv
            for obj in items:
                listed.add(object_key(obj))
                if self._kept(obj):
                    fresh[object_key(obj)] = self._slim(obj)
        return rv

    async def apply(self, kind: str, obj: dict[str, Any]) -> None:
        """One watch event: update the cache (through ``keep``) and report it."""
        key = object_key(obj)
        if kind == "DELETED":
            cached = self.cache.get(key)
            if cached is not None and uid(cached) and uid(obj) and uid(cached) != uid(obj):
                return  # a late event about an object we already replaced (and cached) under the same name
            self._bury(key, obj)
            if self.cache.pop(key, None) is not None or self.keep is None:
                await self._emit(kind, obj)
            return
        if not self._kept(obj):
            if self.cache.pop(key, None) is not None:
                await self._emit("DELETED", obj)
            return
        self.cache[key] = self._slim(obj)
        await self._emit(kind, obj)

    async def fetch(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A targeted GET of one object into the cache (a watch event that arrived meanwhile wins)."""
        obj = await self.kube.get(self.resource, namespace or None, name)
        key = (namespace, name)
        if obj is not None and key not in self.cache and self._kept(obj) and not self.deleted(key, obj):
            obj.setdefault("apiVersion", self.resource.api_version)
            obj.setdefault("kind", self.resource.kind)
            self._cache_ours(key, obj)
        return self.cache.get(key)

    async def _watch_once(self, rv: str) -> tuple[str, int]:
        """One watch from ``rv`` until the server closes it; returns the newest resourceVersion and the event count."""
        events = 0
        stream = self.kube.watch(
            self.resource,
            self.namespace,
            rv,
            timeout_seconds=self.timeout_seconds,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
        )
        async for kind, obj in stream:
            events += 1
            rv = resource_version(obj) or rv
            self.resource_version = rv
            if kind != "BOOKMARK":
                await self.apply(kind, obj)
        return rv, events

    async def run(self) -> None:
        """Forever: list, then watch from the newest resourceVersion; resume after faults; relist on 410."""
        loop = asyncio.get_running_loop()
        attempt = 0
        rv: str | None = None
        while True:
            retry_after: float | None = None
            try:
                if rv is None:
                    rv = await self.relist()
                started = loop.time()
                rv, events = await self._watch_once(rv)
                if events == 0 and loop.time() - started < self.quick_close_seconds:
                    raise RetryableError(f"watch of {self.name} closed at once with no events")
                attempt = 0  # the server closed a healthy watch: reconnect at once
                continue
            except GoneError:
                log.info("watch of %s expired (410 Gone): relisting", self.name)
                rv = None
                continue
            except RetryableError as exc:
                retry_after = exc.retry_after
                self.last_error = str(exc)
            except ModelferryError as exc:  # 401/403/400: wait for RBAC or a fix, never exit
                self.last_error = str(exc)
            except Exception as exc:  # a bug in a handler or an unexpected answer: log it, relist, go on
                log.exception("watch of %s crashed; relisting after a pause", self.name)
                self.last_error = repr(exc)
                rv = None
            self.failures += 1
            delay = self.backoff.delay(attempt, retry_after)
            attempt += 1
            log.warning(
                "watch of %s failed (%s); %s in %.1fs",
                self.name,
                self.last_error,
                "relisting" if rv is None else f"resuming from resourceVersion {rv}",
                delay,
            )
            await asyncio.sleep(delay)
            if rv is not None:
                self.resumes += 1
