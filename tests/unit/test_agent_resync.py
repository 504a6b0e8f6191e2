"""A resync evaluates each model as cached when its turn comes, and a watch event that overtakes it wins."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, cast

from modelferry.controller.agent.gopher import Gopher
from modelferry.controller.agent.kubeside import NodeAgent
from modelferry.controller.agent.metrics import AgentMetrics
from modelferry.controller.agent.settings import AgentOptions, AgentSettings
from modelferry.controller.agent.tasks import ModelRef, TaskQueue
from modelferry.controller.kube.client import Kube

NODE = {"metadata": {"name": "node-1", "labels": {"zone": "a"}}}


class NodeOnly:
    """The one call a resync makes of the API (the node, for its labels)."""

    async def get(self, res: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        return NODE


class PausingGopher(Gopher):
    """Holds the first look at the disk until the test lets it go, so a watch event can come in between."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pause = False  # set by the test when the look to hold is next
        self.looking = threading.Event()
        self.go = threading.Event()

    def held_fingerprint(self, ref: ModelRef, obj: dict[str, Any]) -> str | None:
        if self.pause and not self.looking.is_set():
            self.looking.set()
            assert self.go.wait(10)
        return super().held_fingerprint(ref, obj)


def agent(tmp_path: Path) -> tuple[NodeAgent, PausingGopher]:
    (tmp_path / "models").mkdir()
    settings = AgentSettings()
    settings.agent = AgentOptions(
        node_name="node-1",
        namespace="modelferry",
        models_root=str(tmp_path / "models"),
        allowed_local_roots=[str(tmp_path)],
    )
    metrics = AgentMetrics()
    gopher = PausingGopher(settings, TaskQueue(), sink=None, metrics=metrics)  # type: ignore[arg-type]
    return NodeAgent(settings, cast(Kube, NodeOnly()), gopher, metrics), gopher


def model(tmp_path: Path, rv: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelferry.io/v1alpha1",
        "kind": "BaseModel",
        "metadata": {"name": "tiny", "namespace": "team", "uid": "u1", "resourceVersion": rv},
        "spec": {"storage": {"storageUri": f"file://{tmp_path}/v1"}},
    }


async def test_a_model_deleted_while_the_resync_looked_at_it_is_not_downloaded_again(tmp_path: Path) -> None:
    node_agent, gopher = agent(tmp_path)
    informer = node_agent.informers[0]
    await informer.apply("ADDED", model(tmp_path, "5"))
    node_agent.gopher.queue = TaskQueue()  # what the ADDED queued is not what this test is about
    gopher.pause = True
    resync = asyncio.create_task(node_agent.resync())
    assert await asyncio.to_thread(gopher.looking.wait, 10)
    await informer.apply("DELETED", model(tmp_path, "6"))  # the user deleted it meanwhile
    gopher.go.set()
    await asyncio.wait_for(resync, 10)
    assert gopher.queue.depth() == 0


async def test_a_resync_queues_what_a_still_cached_model_needs(tmp_path: Path) -> None:
    node_agent, gopher = agent(tmp_path)
    informer = node_agent.informers[0]
    await informer.apply("ADDED", model(tmp_path, "5"))
    node_agent.gopher.queue = TaskQueue()
    await node_agent.resync()
    assert gopher.queue.depth() == 1
