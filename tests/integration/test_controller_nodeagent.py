"""NodeAgent -> the agent DaemonSet -> NodeAgent status, against the API emulator with the real client."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from modelferry.controller.agent.daemonset import render_daemonset
from tests.servers.kube import KubeEmulator
from tests.servers.kube_controller import NS, Harness, eventually, running

API = "modelferry.io/v1alpha1"
DS = "modelferry-agent"
IMAGE = "quay.io/modelferry/modelferry:test"


def nodeagent(name: str = "default", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "NodeAgent", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
async def harness(kube_backend: Callable[..., Any]) -> AsyncIterator[Harness]:
    async with running(kube_backend()) as h:
        yield h


async def start(h: Harness) -> None:
    await h.start(agent_namespace=NS, node_agent={"image": IMAGE}, training={"enabled": False}, aggregate_models=False)


def daemonset(h: Harness, name: str = DS) -> dict[str, Any] | None:
    return h.emu.get("apps/v1", "daemonsets", NS, name)


def ready(h: Harness, name: str = "default") -> dict[str, Any]:
    status = (h.emu.get(API, "nodeagents", "", name) or {}).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})


def env(ds: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]}


async def roll_out(h: Harness, nodes: int, name: str = DS) -> None:
    """What the DaemonSet controller would write once every node runs the current template."""
    ds = daemonset(h, name)
    assert ds is not None
    generation = ds["metadata"]["generation"]
    status = {"observedGeneration": generation, "desiredNumberScheduled": nodes}
    await h.emu.set_status(
        "apps/v1", "daemonsets", NS, name, {**status, "numberReady": nodes, "updatedNumberScheduled": nodes}
    )


@pytest.mark.emulator_only(
    "the server defaults DaemonSet fields (rollingUpdate.maxSurge); the test compares the spec with the rendered one"
)
async def test_nodeagent_runs_the_daemonset_and_reports_the_nodes(harness: Harness) -> None:
    await start(harness)
    await harness.apply(nodeagent(), API, "nodeagents")
    ds = await eventually(lambda: daemonset(harness))
    agent = harness.emu.get(API, "nodeagents", "", "default")
    assert agent is not None
    expected = render_daemonset(agent, namespace=NS, default_image=IMAGE)
    assert isinstance(expected, dict)
    assert ds["spec"] == expected["spec"]
    assert ds["metadata"]["ownerReferences"][0]["uid"] == agent["metadata"]["uid"]
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    await eventually(lambda: ready(harness).get("reason") == "RolloutPending")

    await roll_out(harness, 3)
    await eventually(lambda: ready(harness).get("status") == "True")
    status = harness.emu.get(API, "nodeagents", "", "default")["status"]  # type: ignore[index]
    assert (status["desiredNodes"], status["readyNodes"], status["updatedNodes"]) == (3, 3, 3)
    assert status["daemonSet"] == f"{NS}/{DS}" and ready(harness)["reason"] == "AllNodesReady"


async def test_a_spec_change_updates_the_daemonset_in_place(harness: Harness) -> None:
    await start(harness)
    await harness.apply(nodeagent(workers=2), API, "nodeagents")
    first = await eventually(lambda: daemonset(harness))
    await roll_out(harness, 2)
    await eventually(lambda: ready(harness).get("status") == "True")

    await harness.apply(nodeagent(workers=5, nodeSelector={"gpu": "true"}), API, "nodeagents")
    ds = await eventually(lambda: (d := daemonset(harness)) and env(d)["MODELFERRY_AGENT__WORKERS"] == "5" and d)
    assert ds["metadata"]["uid"] == first["metadata"]["uid"]  # replaced, not deleted and recreated
    assert ds["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": "true"}
    await eventually(lambda: ready(harness).get("reason") == "RolloutPending")
    await roll_out(harness, 1)
    await eventually(lambda: ready(harness).get("status") == "True")


@pytest.mark.emulator_only("a real server refuses the bare DaemonSet (no selector, no containers) the test plants")
async def test_a_daemonset_it_did_not_create_is_left_alone(harness: Harness) -> None:
    foreign = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": DS, "namespace": NS}, "spec": {}}
    await harness.apply(foreign, "apps/v1", "daemonsets")
    await start(harness)
    await harness.apply(nodeagent(), API, "nodeagents")
    cond = await eventually(lambda: ready(harness).get("reason") == "DaemonSetNotManaged" and ready(harness))
    assert cond["status"] == "False" and "delete it" in cond["message"]
    assert daemonset(harness)["spec"] == {}  # type: ignore[index]


@pytest.mark.emulator_only("the CRD pattern on spec.image refuses $(EVIL) at admission")
async def test_an_invalid_spec_is_reported_and_nothing_runs(harness: Harness) -> None:
    await start(harness)
    # The API server's schema check would refuse these; the controller checks again before rendering.
    await harness.apply(nodeagent(modelsRoot="/mnt/../etc", image="$(EVIL)"), API, "nodeagents")
    cond = await eventually(lambda: ready(harness).get("reason") == "InvalidSpec" and ready(harness))
    assert "spec.image" in cond["message"] and "$(EVIL)" in cond["message"]
    assert daemonset(harness) is None
    await harness.apply(nodeagent(modelsRoot="/data/models"), API, "nodeagents")
    ds = await eventually(lambda: daemonset(harness))
    assert env(ds)["MODELFERRY_AGENT__MODELS_ROOT"] == "/data/models"


async def test_two_nodeagents_and_deleting_one_removes_its_daemonset(harness: Harness) -> None:
    await start(harness)
    await harness.apply(nodeagent(), API, "nodeagents")
    await harness.apply(nodeagent("gpu", nodeSelector={"gpu": "true"}), API, "nodeagents")
    await eventually(lambda: daemonset(harness) and daemonset(harness, f"{DS}-gpu"))
    await harness.emu.remove(API, "nodeagents", "", "gpu")
    await eventually(lambda: daemonset(harness, f"{DS}-gpu") is None)
    assert daemonset(harness) is not None


async def test_someone_deleting_the_daemonset_gets_it_back(harness: Harness) -> None:
    await start(harness)
    controller = harness.controllers[0][0]
    await harness.apply(nodeagent(), API, "nodeagents")
    first = copy.deepcopy(await eventually(lambda: daemonset(harness)))
    before = controller.operator.reconciles.get("NodeAgent", 0)
    await harness.emu.remove("apps/v1", "daemonsets", NS, DS)
    again = await eventually(lambda: daemonset(harness))
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    assert controller.operator.reconciles["NodeAgent"] > before


class RacingEmulator(KubeEmulator):
    """Answers the first DaemonSet create and the first replace with 409, as when another writer got there first."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[str] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if "/daemonsets" in request.path and request.method in ("POST", "PUT") and request.method not in self.refused:
            self.refused.append(request.method)
            return web.json_response(
                {"kind": "Status", "code": 409, "reason": "Conflict", "message": "raced"}, status=409
            )
        return await super()._handle(request)


async def test_conflicts_on_create_and_replace_are_retried() -> None:
    emu = RacingEmulator()
    async with running(emu) as h:
        await start(h)
        await h.apply(nodeagent(), API, "nodeagents")
        await eventually(lambda: daemonset(h))
        await h.apply(nodeagent(workers=7), API, "nodeagents")
        ds = await eventually(lambda: (d := daemonset(h)) and env(d)["MODELFERRY_AGENT__WORKERS"] == "7" and d)
        assert emu.refused == ["POST", "PUT"]
        assert ds["metadata"]["labels"]["modelferry.io/owner-name"] == "default"
