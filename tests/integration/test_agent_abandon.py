"""A model deleted (or no longer wanted here) while it downloads: the download stops, the delete follows it.

Before, the download ran to its end and reported the deleted model Ready on this node, and its copy
stayed until the next resync.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from modelferry.controller.agent.entries import ModelEntry, ModelStatus
from modelferry.controller.agent.gopher import Gopher
from modelferry.controller.agent.kubeside import NodeAgent
from modelferry.controller.agent.metrics import AgentMetrics
from modelferry.controller.agent.tasks import ModelRef, Task, TaskQueue, TaskType
from modelferry.controller.kube.client import Kube
from modelferry.settings import Credentials
from modelferry.storage.base import ObjectInfo, Store
from modelferry.storage.local import LocalStore
from modelferry.uri import parse_uri
from tests.integration.test_agent_gopher import Sink, settings_for

WAIT = 30  # seconds any one step may take before the test fails (never reached when it passes)


class Holding(LocalStore):
    """A source whose transfer reads stop after their first chunk until the engine interrupts them.

    Only the engine's workers are held: the source's files are hashed first (no manifest), and that
    phase notices cancellation between chunks, not through ``interrupt``.
    """

    reading = threading.Event()
    released = threading.Event()

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        for chunk in super().read(path, start, length, info=info):
            yield chunk
            if not threading.current_thread().name.startswith("transfer-"):
                continue
            type(self).reading.set()
            assert type(self).released.wait(WAIT), "the download was never interrupted"

    def interrupt(self) -> None:
        type(self).released.set()


def source_tree(tmp_path: Path) -> Path:
    src = tmp_path / "bucket" / "model"
    src.mkdir(parents=True)
    (src / "config.json").write_text('{"model_type": "llama"}')
    (src / "model.safetensors").write_bytes(b"w" * (4 << 20))
    return src


def basemodel(uri: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelferry.io/v1alpha1",
        "kind": "BaseModel",
        "metadata": {"name": "tiny", "namespace": "team", "uid": "u1", "resourceVersion": "5"},
        "spec": {"storage": {"storageUri": uri}},
    }


def holding_gopher(tmp_path: Path) -> tuple[Gopher, Sink]:
    (tmp_path / "models").mkdir()
    Holding.reading = threading.Event()
    Holding.released = threading.Event()

    def opener(uri: str, _creds: Credentials) -> Store:
        return Holding(parse_uri(uri), Path(parse_uri(uri).path))

    sink = Sink()
    return Gopher(settings_for(tmp_path / "models"), TaskQueue(), sink, AgentMetrics(), store_opener=opener), sink


def test_a_download_in_flight_stops_when_its_model_goes_and_the_delete_cleans_up(tmp_path: Path) -> None:
    obj = basemodel(f"file://{source_tree(tmp_path)}")
    ref = ModelRef.of(obj)
    gopher, sink = holding_gopher(tmp_path)
    gopher.start()
    try:
        gopher.queue.put(Task(TaskType.DOWNLOAD, ref, obj))
        assert Holding.reading.wait(WAIT)
        gopher.queue.put(Task(TaskType.DELETE, ref, obj))
        assert gopher.abandon(ref)
        assert gopher.queue.wait_idle(WAIT)
    finally:
        gopher.stop()
    assert sink.statuses() == ["Updating", "Deleted"]  # never Ready, and no failure of its own
    assert list((tmp_path / "models").rglob("*")) == [tmp_path / "models" / "team"]  # no copy, no staging


def test_a_delete_queued_as_its_download_was_taken_stops_it_before_it_starts(tmp_path: Path) -> None:
    """The window between a worker taking the download and registering it: the queued delete is seen."""
    obj = basemodel(f"file://{source_tree(tmp_path)}")
    ref = ModelRef.of(obj)
    gopher, sink = holding_gopher(tmp_path)
    gopher.queue.put(Task(TaskType.DOWNLOAD, ref, obj))
    taken = gopher.queue.get(timeout=WAIT)
    assert taken is not None
    gopher.queue.put(Task(TaskType.DELETE, ref, obj))
    assert not gopher.abandon(ref)  # not running yet: nothing to stop here
    gopher.run(taken)
    gopher.queue.done(taken)
    assert not Holding.reading.is_set()
    assert "Ready" not in sink.statuses() and "Failed" not in sink.statuses()
    assert not (tmp_path / "models" / "team" / "tiny").exists()


def test_shutdown_still_reports_the_download_failed(tmp_path: Path) -> None:
    """Stopping the agent is not abandoning the model: the interrupted download says so (and is redone)."""
    obj = basemodel(f"file://{source_tree(tmp_path)}")
    gopher, sink = holding_gopher(tmp_path)
    gopher.start()
    gopher.queue.put(Task(TaskType.DOWNLOAD, ModelRef.of(obj), obj))
    assert Holding.reading.wait(WAIT)
    gopher.stop(timeout=WAIT)
    assert not gopher.alive()
    assert sink.statuses() == ["Updating", "Failed"]


class Recording(NodeAgent):
    """The agent, with every status its gopher publishes kept in order."""

    def __init__(self, tmp_path: Path, gopher: Gopher) -> None:
        super().__init__(settings_for(tmp_path / "models"), cast(Kube, NodeOnly()), gopher, AgentMetrics())
        self.published: list[str] = []

    def publish(self, entry: ModelEntry) -> None:
        self.published.append(str(entry.status))
        super().publish(entry)


class NodeOnly:
    async def get(self, res: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": "node-1", "labels": {}}}


async def test_the_agent_queues_a_delete_behind_a_download_of_a_model_deleted_meanwhile(tmp_path: Path) -> None:
    gopher, _sink = holding_gopher(tmp_path)
    node_agent = NodeAgent(settings_for(tmp_path / "models"), cast(Kube, NodeOnly()), gopher, AgentMetrics())
    informer = node_agent.informers[0]
    obj = basemodel(f"file://{source_tree(tmp_path)}")
    await informer.apply("ADDED", obj)
    taken = gopher.queue.get(timeout=WAIT)  # a worker runs the download now: nothing is on disk yet
    assert taken is not None and taken.type == TaskType.DOWNLOAD
    await informer.apply("DELETED", {**obj, "metadata": {**obj["metadata"], "resourceVersion": "6"}})
    assert gopher.queue.delete_pending(taken.ref)
    gopher.queue.done(taken)


async def test_a_model_deleted_with_nothing_queued_or_on_disk_queues_nothing(tmp_path: Path) -> None:
    gopher, _sink = holding_gopher(tmp_path)
    node_agent = NodeAgent(settings_for(tmp_path / "models"), cast(Kube, NodeOnly()), gopher, AgentMetrics())
    obj = basemodel(f"file://{source_tree(tmp_path)}")
    await node_agent.on_event("DELETED", obj)
    assert gopher.queue.depth() == 0


def complete_copy(tmp_path: Path, obj: dict[str, Any]) -> tuple[Gopher, Sink]:
    """A gopher whose node already holds the model's complete copy (as after an agent restart)."""
    gopher, sink = holding_gopher(tmp_path)
    plain = Gopher(gopher.settings, TaskQueue(), sink, AgentMetrics())
    plain.run(Task(TaskType.DOWNLOAD, ModelRef.of(obj), obj))
    assert sink.statuses() == ["Updating", "Ready"]
    sink.entries.clear()
    return gopher, sink


async def test_the_agent_stops_a_running_download_when_the_model_is_deleted(tmp_path: Path) -> None:
    gopher, _sink = holding_gopher(tmp_path)
    node_agent = Recording(tmp_path, gopher)
    informer = node_agent.informers[0]
    obj = basemodel(f"file://{source_tree(tmp_path)}")
    gopher.start()
    try:
        await informer.apply("ADDED", obj)
        assert await asyncio.to_thread(Holding.reading.wait, WAIT)
        await informer.apply("DELETED", {**obj, "metadata": {**obj["metadata"], "resourceVersion": "6"}})
        assert await asyncio.to_thread(gopher.queue.wait_idle, WAIT)
    finally:
        gopher.stop()
    assert node_agent.published == ["Updating", "Deleted"]
    assert not (tmp_path / "models" / "team" / "tiny").exists()


async def test_a_model_wanted_again_before_its_delete_ran_keeps_its_copy(tmp_path: Path) -> None:
    obj = basemodel(f"file://{source_tree(tmp_path)}")
    gopher, _sink = complete_copy(tmp_path, obj)
    node_agent = Recording(tmp_path, gopher)
    ref = ModelRef.of(obj)
    node_agent.entries[ref] = ModelEntry(ref, ModelStatus.READY)  # as the agent reported it before
    informer = node_agent.informers[0]
    await informer.apply("DELETED", obj)  # the workers are busy: the delete waits in the queue
    assert gopher.queue.delete_pending(ModelRef.of(obj))
    await informer.apply("ADDED", {**obj, "metadata": {**obj["metadata"], "uid": "u2", "resourceVersion": "7"}})
    taken = gopher.queue.get(timeout=WAIT)
    assert taken is not None and taken.type == TaskType.DOWNLOAD_OVERRIDE
    gopher.run(taken)
    gopher.queue.done(taken)
    assert gopher.queue.idle()
    assert node_agent.published == ["Ready"]
    assert (tmp_path / "models" / "team" / "tiny" / "model.safetensors").exists()


def test_a_complete_copy_is_not_reported_ready_when_its_delete_is_queued(tmp_path: Path) -> None:
    obj = basemodel(f"file://{source_tree(tmp_path)}")
    gopher, sink = complete_copy(tmp_path, obj)
    ref = ModelRef.of(obj)
    gopher.queue.put(Task(TaskType.DOWNLOAD, ref, obj))
    taken = gopher.queue.get(timeout=WAIT)
    assert taken is not None
    gopher.queue.put(Task(TaskType.DELETE, ref, obj))
    gopher.run(taken)
    gopher.queue.done(taken)
    assert sink.statuses() == []


def test_a_download_stopped_after_its_copy_is_complete_is_not_swapped_in(tmp_path: Path) -> None:
    obj = basemodel(f"file://{source_tree(tmp_path)}")
    ref = ModelRef.of(obj)
    gopher, sink = holding_gopher(tmp_path)

    class GoneWhenDone(LocalStore):
        def close(self) -> None:  # called once the sync has ended, before the swap
            gopher.queue.put(Task(TaskType.DELETE, ref, obj))
            assert gopher.abandon(ref)

    gopher.store_opener = lambda uri, _c: GoneWhenDone(parse_uri(uri), Path(parse_uri(uri).path))
    gopher.queue.put(Task(TaskType.DOWNLOAD, ref, obj))
    for _ in range(2):  # the download, then the delete queued behind it
        taken = gopher.queue.get(timeout=WAIT)
        assert taken is not None
        gopher.run(taken)
        gopher.queue.done(taken)
    assert sink.statuses() == ["Updating", "Deleted"]
    assert list((tmp_path / "models").rglob("*")) == [tmp_path / "models" / "team"]
