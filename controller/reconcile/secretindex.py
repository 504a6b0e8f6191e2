"""Which objects read which Secrets, and a cache of just those Secrets.

:class:`SecretIndex` maps a Secret ``(namespace, name)`` to the keys of the objects that reference it
(a ``model-source`` Secret names its data connection; a ModelSync names its credentials, data
connection and decrypt Secrets) and back, so a Secret event requeues exactly its readers: handling one
event is O(objects that reference it), never a scan of every cached object.

:class:`ReferencedSecrets` keeps only indexed Secrets in memory. It is a *name-indexed watch*: one
watch of the Secrets in scope whose events are dropped unless the name is indexed (a relist runs in
pages, so memory does not grow with the unrelated Secrets of the cluster), plus a targeted GET for a
name that becomes referenced after the watch listed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable
from typing import Any

from modelferry.controller.kube.client import SECRETS, Kube
from modelferry.controller.kube.watch import Backoff, Informer, object_key

SecretKey = tuple[str, str]  # (namespace, name)


class SecretIndex:
    """Secret ``(namespace, name)`` <-> the keys of the objects that read it."""

    def __init__(self) -> None:
        self._readers: dict[SecretKey, set[Hashable]] = {}
        self._reads: dict[Hashable, frozenset[SecretKey]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._readers

    def __len__(self) -> int:
        return len(self._readers)

    def set(self, reader: Hashable, namespace: str, names: Collection[str]) -> tuple[list[SecretKey], list[SecretKey]]:
        """``reader`` now reads ``names`` in ``namespace``; returns the Secrets newly and no longer indexed."""
        new = frozenset((namespace, n) for n in names if n)
        old = self._reads.get(reader, frozenset())
        if new == old:
            return [], []
        added, removed = [], []
        for key in old - new:
            readers = self._readers.get(key)
            if readers is not None:
                readers.discard(reader)
                if not readers:
                    del self._readers[key]
                    removed.append(key)
        for key in new - old:
            readers = self._readers.setdefault(key, set())
            if not readers:
                added.append(key)
            readers.add(reader)
        if new:
            self._reads[reader] = new
        else:
            self._reads.pop(reader, None)
        return added, removed

    def drop(self, reader: Hashable) -> list[SecretKey]:
        """``reader`` is gone; returns the Secrets no longer indexed."""
        return self.set(reader, "", ())[1]

    def keys(self) -> list[SecretKey]:
        return list(self._readers)

    def readers(self, namespace: str, name: str) -> list[Hashable]:
        """The keys of the objects that read Secret ``namespace/name``."""
        return list(self._readers.get((namespace, name), ()))


class ReferencedSecrets:
    """The referenced Secrets, cached from a name-indexed watch per namespace (all namespaces: one)."""

    def __init__(
        self,
        kube: Kube,
        namespaces: list[str | None],
        on_change: Callable[[str, str], None],
        *,
        timeout_seconds: int,
        page_size: int,
        backoff: Backoff,
    ) -> None:
        self.index = SecretIndex()
        self.on_change = on_change
        self._known: set[SecretKey] = set()  # indexed names whose state (present or absent) the cache holds
        self.fetches = 0
        self.informers: dict[str | None, Informer] = {
            ns: Informer(
                kube,
                SECRETS,
                self._on_event,
                namespace=ns,
                keep=self._indexed,
                on_relist=self._listing,
                page_size=page_size,
                timeout_seconds=timeout_seconds,
                backoff=backoff,
            )
            for ns in namespaces
        }

    def _indexed(self, obj: dict[str, Any]) -> bool:
        return object_key(obj) in self.index

    def _informer(self, namespace: str) -> Informer | None:
        return self.informers.get(namespace) or self.informers.get(None)

    def _on_event(self, kind: str, obj: dict[str, Any]) -> None:
        ns, name = object_key(obj)
        self._known.add((ns, name))
        self.on_change(ns, name)

    def _listing(self) -> Callable[[], None]:
        """At the start of a relist: once it ends, every name indexed now is known (cached, or absent)."""
        indexed = set(self.index.keys())

        def done() -> None:
            self._known.update(k for k in indexed if k in self.index)

        return done

    def set(self, reader: Hashable, namespace: str, names: Collection[str]) -> None:
        """Record what ``reader`` reads; forget the Secrets nobody reads any more."""
        self._forget(self.index.set(reader, namespace, names)[1])

    def drop(self, reader: Hashable) -> None:
        self._forget(self.index.drop(reader))

    def _forget(self, keys: list[SecretKey]) -> None:
        for key in keys:
            self._known.discard(key)
            informer = self._informer(key[0])
            if informer is not None:
                informer.cache.pop(key, None)

    def cached(self, namespace: str, name: str) -> dict[str, Any] | None:
        informer = self._informer(namespace)
        return informer.get(namespace, name) if informer else None

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret if it exists: from the cache, or one targeted GET the first time a name is referenced."""
        key = (namespace, name)
        informer = self._informer(namespace)
        if informer is None:
            return None
        if key in informer.cache or key in self._known or key not in self.index:
            return informer.cache.get(key)
        self.fetches += 1
        secret = await informer.fetch(namespace, name)
        self._known.add(key)
        return secret

    async def many(self, namespace: str, names: Collection[str]) -> dict[str, dict[str, Any] | None]:
        return {n: await self.get(namespace, n) for n in names}
