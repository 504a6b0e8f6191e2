"""Task decisions, de-duplication and coalescing, and the per-model exclusive queue."""

from __future__ import annotations

import threading
from typing import Any

from modelferry.controller.agent.tasks import ModelRef, Task, TaskQueue, TaskType, coalesce, decide, spec_fingerprint


def model(name: str = "llama", uri: str = "hf://meta/llama", ns: str = "team", **storage: Any) -> dict[str, Any]:
    return {
        "kind": "BaseModel",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"storage": {"storageUri": uri, **storage}},
    }


def test_refs_and_keys() -> None:
    assert ModelRef.of(model()).key == "team.basemodel.llama"
    cbm = {"kind": "ClusterBaseModel", "metadata": {"name": "mistral"}}
    assert ModelRef.of(cbm) == ModelRef("ClusterBaseModel", "", "mistral")
    assert ModelRef.of(cbm).key == "clusterbasemodel.mistral"
    assert str(ModelRef.of(model())) == "BaseModel/team/llama"


def test_fingerprint_ignores_placement() -> None:
    a = model(nodeSelector={"zone": "a"})
    b = model(nodeSelector={"zone": "b"})
    assert spec_fingerprint(a) == spec_fingerprint(b)
    assert spec_fingerprint(model(uri="hf://meta/llama@v2")) != spec_fingerprint(a)


def test_decide() -> None:
    obj = model()
    fp = spec_fingerprint(obj)
    assert decide(obj, wanted=True, held_fingerprint=None).type == TaskType.DOWNLOAD  # type: ignore[union-attr]
    assert decide(obj, wanted=True, held_fingerprint=fp) is None
    assert decide(obj, wanted=True, held_fingerprint="old").type == TaskType.DOWNLOAD_OVERRIDE  # type: ignore[union-attr]
    assert decide(obj, wanted=False, held_fingerprint=fp).type == TaskType.DELETE  # type: ignore[union-attr]
    assert decide(obj, wanted=False, held_fingerprint=None) is None
    assert decide(obj, wanted=True, held_fingerprint=fp, deleted=True).type == TaskType.DELETE  # type: ignore[union-attr]
    # A download queued or running may still place a copy: the delete goes behind it.
    assert decide(obj, wanted=False, held_fingerprint=None, in_flight=True).type == TaskType.DELETE  # type: ignore[union-attr]
    # Wanted again while its delete waits: a download, which coalesces with the delete into an override.
    assert decide(obj, wanted=True, held_fingerprint=fp, delete_queued=True).type == TaskType.DOWNLOAD  # type: ignore[union-attr]


def test_skip_config_annotation() -> None:
    obj = model()
    obj["metadata"]["annotations"] = {"ome.oracle.com/skip-config-parsing": "true"}
    assert Task(TaskType.DOWNLOAD, ModelRef.of(obj), obj).skip_config
    assert not Task(TaskType.DOWNLOAD, ModelRef.of(model()), model()).skip_config


def t(kind: TaskType, obj: dict[str, Any] | None = None) -> Task:
    obj = obj or model()
    return Task(kind, ModelRef.of(obj), obj)


def test_coalesce_rules() -> None:
    d, o, x = TaskType.DOWNLOAD, TaskType.DOWNLOAD_OVERRIDE, TaskType.DELETE
    assert coalesce(t(d), t(d)).type == d  # type: ignore[union-attr]
    assert coalesce(t(d), t(x)).type == x  # type: ignore[union-attr]
    assert coalesce(t(o), t(x)).type == x  # type: ignore[union-attr]
    assert coalesce(t(x), t(d)).type == o  # type: ignore[union-attr]
    assert coalesce(t(d), t(o)).type == o  # type: ignore[union-attr]
    assert coalesce(t(o), t(d)).type == o  # type: ignore[union-attr]
    newer = model(uri="hf://meta/llama@v3")
    assert coalesce(t(d), t(d, newer)).obj is newer  # type: ignore[union-attr]


def test_queue_dedupes_and_keeps_order() -> None:
    q = TaskQueue()
    q.put(t(TaskType.DOWNLOAD, model("a")))
    q.put(t(TaskType.DOWNLOAD, model("b")))
    q.put(t(TaskType.DOWNLOAD, model("a")))
    assert q.depth() == 2
    first = q.get(timeout=0)
    assert first is not None and first.ref.name == "a"


def test_queue_never_hands_out_one_model_twice() -> None:
    q = TaskQueue()
    q.put(t(TaskType.DOWNLOAD, model("a")))
    task = q.get(timeout=0)
    assert task is not None
    q.put(t(TaskType.DELETE, model("a")))
    assert q.get(timeout=0) is None  # "a" is active: its delete waits
    q.done(task)
    nxt = q.get(timeout=0)
    assert nxt is not None and nxt.type == TaskType.DELETE
    q.done(nxt)
    assert q.idle()


def test_queue_close_wakes_waiters() -> None:
    q = TaskQueue()
    got: list[Task | None] = []
    waiter = threading.Thread(target=lambda: got.append(q.get()))
    waiter.start()
    q.close()
    waiter.join(5)
    assert got == [None]
