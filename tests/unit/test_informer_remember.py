"""An answer to our own write or a GET never hides a newer version or a deletion the watch already brought."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest

from modelferry.controller.kube import watch
from modelferry.controller.kube.client import JOBS, Kube
from modelferry.controller.kube.watch import Informer


def job(rv: str, uid: str = "u1", failed: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": "j", "namespace": "ns", "uid": uid, "resourceVersion": rv, "managedFields": [{}]},
        "status": {"failed": failed},
    }


def informer() -> Informer:
    return Informer(cast(Kube, None), JOBS, lambda kind, obj: None)


def test_a_newer_watched_version_survives_the_answer_to_our_create() -> None:
    inf = informer()
    inf.cache[("ns", "j")] = job("298", failed=1)  # the watch: ADDED 297, then someone's status write 298
    inf.remember(("ns", "j"), job("297"))  # our create's answer, arriving late
    assert inf.cache[("ns", "j")]["status"]["failed"] == 1


def test_our_answer_replaces_an_older_version_another_object_or_nothing() -> None:
    inf = informer()
    inf.remember(("ns", "j"), job("5"))
    assert inf.cache[("ns", "j")]["metadata"]["resourceVersion"] == "5"
    assert "managedFields" not in inf.cache[("ns", "j")]["metadata"]
    inf.remember(("ns", "j"), job("7"))
    assert inf.cache[("ns", "j")]["metadata"]["resourceVersion"] == "7"
    inf.remember(("ns", "j"), job("3", uid="u2"))  # a new object under the same name
    assert inf.cache[("ns", "j")]["metadata"]["uid"] == "u2"
    inf.cache[("ns", "j")] = job("opaque-b")
    inf.remember(("ns", "j"), job("opaque-a"))  # versions that do not order: ours wins, as before
    assert inf.cache[("ns", "j")]["metadata"]["resourceVersion"] == "opaque-a"


class FakeKube:
    """``get`` and ``list_pages`` as the informer calls them, with steps run while a GET or a list is in flight."""

    def __init__(self, pages: list[list[dict[str, Any]]] | None = None, got: dict[str, Any] | None = None) -> None:
        self.pages = pages or []
        self.got = got
        self.during: list[Callable[[], Awaitable[None]]] = []  # while the list is between pages
        self.during_get: list[Callable[[], Awaitable[None]]] = []

    async def get(self, res: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        for step in self.during_get:
            await step()
        return None if self.got is None else dict(self.got)

    async def list_pages(self, res: Any, namespace: str | None, **_: Any) -> AsyncIterator[tuple[list[Any], str]]:
        for n, page in enumerate(self.pages):
            yield page, "100"
            if n == 0:
                for step in self.during:  # between the first page and the next
                    await step()


def watching(kube: FakeKube, keep: Callable[[dict[str, Any]], bool] | None = None) -> tuple[Informer, list[str]]:
    events: list[str] = []
    inf = Informer(
        cast(Kube, kube), JOBS, lambda kind, obj: events.append(f"{kind} {obj['metadata']['name']}"), keep=keep
    )
    return inf, events


def named(name: str, rv: str, uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": rv}}


async def test_the_answer_to_our_write_does_not_bring_back_an_object_the_watch_deleted() -> None:
    inf = informer()
    await inf.apply("ADDED", job("5"))
    await inf.apply("DELETED", job("6"))  # the user deleted it right after our status patch
    inf.remember(("ns", "j"), job("5"))  # the patch's answer, arriving late
    assert inf.get("ns", "j") is None
    inf.remember(("ns", "j"), job("7", uid="u2"))  # a new object under the same name is ours to cache
    assert inf.get("ns", "j") is not None and inf.get("ns", "j")["metadata"]["uid"] == "u2"  # type: ignore[index]


async def test_a_get_in_flight_while_the_watch_deletes_the_object_caches_nothing() -> None:
    kube = FakeKube(got=named("s", "5"))
    inf, _ = watching(kube)

    async def deleted_meanwhile() -> None:
        await inf.apply("DELETED", named("s", "6"))

    kube.during_get.append(deleted_meanwhile)
    assert await inf.fetch("ns", "s") is None
    assert inf.get("ns", "s") is None


async def test_a_relist_keeps_what_was_fetched_while_its_pages_went_by() -> None:
    """A Secret left out by ``keep`` as its page passed, then fetched once named: not swept, no DELETED."""
    wanted: set[str] = {"a"}
    kube = FakeKube(pages=[[named("a", "3"), named("s", "4")], [named("b", "5")]], got=named("s", "4"))
    inf, events = watching(kube, keep=lambda obj: obj["metadata"]["name"] in wanted or obj["metadata"]["name"] == "b")

    async def named_now() -> None:
        wanted.add("s")
        await inf.fetch("ns", "s")

    kube.during.append(named_now)
    await inf.relist()
    assert inf.get("ns", "s") is not None
    assert "DELETED s" not in events


async def test_a_relist_still_sweeps_an_answer_older_than_the_list_that_the_list_lacks() -> None:
    kube = FakeKube(pages=[[named("a", "3")], []])
    inf, events = watching(kube)

    async def late_answer() -> None:
        inf.remember(("ns", "x"), named("x", "50"))  # deleted before the list (at 100) was taken

    kube.during.append(late_answer)
    await inf.relist()
    assert inf.get("ns", "x") is None
    assert "DELETED x" in events
    inf.remember(("ns", "x"), named("x", "50"))  # and it stays buried
    assert inf.get("ns", "x") is None


async def test_a_relist_keeps_an_answer_newer_than_the_list() -> None:
    kube = FakeKube(pages=[[named("a", "3")], []])
    inf, events = watching(kube)

    async def created_after_the_list() -> None:
        inf.remember(("ns", "y"), named("y", "150"))

    kube.during.append(created_after_the_list)
    await inf.relist()
    assert inf.get("ns", "y") is not None
    assert "DELETED y" not in events


def test_only_the_newest_deletions_are_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "TOMBSTONES", 2)
    inf = informer()
    for n in range(3):
        inf._bury(("ns", f"o{n}"), named(f"o{n}", "1", uid=f"u{n}"))
    assert not inf.deleted(("ns", "o0"), named("o0", "1", uid="u0"))  # forgotten: the oldest of three
    assert inf.deleted(("ns", "o2"), named("o2", "1", uid="u2"))
