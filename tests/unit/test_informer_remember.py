"""An answer to our own write never hides a newer version the watch already brought."""

from __future__ import annotations

from typing import Any, cast

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
