"""The agent against the Kubernetes API emulator with a real local store: flows, healing, aggregation, HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelferry.controller.agent.aggregate import aggregate, aggregate_once
from modelferry.controller.agent.entries import RESOURCES_KEY, label_key
from modelferry.controller.agent.gopher import Gopher
from modelferry.controller.agent.health import build_app, root_usable, serve
from modelferry.controller.agent.kubeside import NodeAgent
from modelferry.controller.agent.metrics import AgentMetrics
from modelferry.controller.agent.secretcreds import credentials_from_secret
from modelferry.controller.agent.settings import AgentOptions, AgentSettings
from modelferry.controller.agent.tasks import ModelRef, TaskQueue
from modelferry.controller.kube.client import Kube, build_api_client
from modelferry.settings import Credentials
from tests.servers.kube import KubeEmulator
from tests.servers.kube_real import RealKube

NS = "modelferry"
API = "modelferry.io/v1alpha1"
PREFIX = "models.modelferry.io"


def write_model(directory: Path, hidden: int, layers: int = 2) -> int:
    """A tiny but real model: config.json and a safetensors file; returns its parameter count."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "max_position_embeddings": 2048})
    )
    header, offset, total = {}, 0, 0
    for i in range(layers):
        n = hidden * hidden
        header[f"layers.{i}.weight"] = {
            "dtype": "F16",
            "shape": [hidden, hidden],
            "data_offsets": [offset, offset + 2 * n],
        }
        offset += 2 * n
        total += n
    raw = json.dumps(header).encode()
    (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    assert total == sum(math.prod(h["shape"]) for h in header.values())
    return total


async def eventually(probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


class Rig:
    """``kube`` acts as the agent's ServiceAccount, ``ctl`` as the controller's (the BaseModel status roll-up)."""

    def __init__(
        self, emu: KubeEmulator | RealKube, kube: Kube, ctl: Kube, agent: NodeAgent, root: Path, src: Path
    ) -> None:
        self.emu, self.kube, self.ctl, self.agent, self.root, self.src = emu, kube, ctl, agent, root, src

    def cm(self) -> dict[str, Any] | None:
        return self.emu.get("v1", "configmaps", NS, "node-1")

    def entry(self, key: str) -> dict[str, Any] | None:
        cm = self.cm()
        raw = ((cm or {}).get("data") or {}).get(key)
        return json.loads(raw) if raw else None

    def labels(self) -> dict[str, str]:
        node = self.emu.get("v1", "nodes", "", "node-1") or {}
        return dict((node.get("metadata") or {}).get("labels") or {})


def basemodel(name: str, uri: str, ns: str = "team", **storage: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "BaseModel",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"storage": {"storageUri": uri, **storage}},
    }


@contextlib.asynccontextmanager
async def running_agent(
    tmp_path: Path, api_url: str, *, hidden: int = 64, **options: Any
) -> AsyncIterator[tuple[Kube, NodeAgent, Path, Path]]:
    """A NodeAgent for node-1 over ``api_url`` with a local model under ``src``; yields (kube, agent, root, src)."""
    src = tmp_path / "src"
    write_model(src / "v1", hidden)
    root = tmp_path / "models"
    root.mkdir()
    settings = AgentSettings()
    settings.agent = AgentOptions(
        node_name="node-1",
        namespace=NS,
        models_root=str(root),
        allowed_local_roots=[str(src)],  # the file:// sources the tests' models name
        **options,
    )
    settings.transfer.free_space_margin = 0
    kube = Kube(await build_api_client(api_url=api_url))
    metrics = AgentMetrics()
    gopher = Gopher(settings, TaskQueue(), sink=None, metrics=metrics)  # type: ignore[arg-type]
    agent = NodeAgent(settings, kube, gopher, metrics)
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(stop))
    try:
        yield kube, agent, root, src
        assert not runner.done(), "the agent ended"
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
        await kube.close()


@pytest.fixture
async def rig(tmp_path: Path, kube_backend: Callable[..., Any]) -> AsyncIterator[Rig]:
    emu = kube_backend(role="agent", namespaces=(NS, "team", "tenant-a", "tenant-b"))
    await emu.start()
    await emu.put_object("v1", "nodes", {"metadata": {"name": "node-1", "labels": {"zone": "a"}}})
    options = {"workers": 2, "reconcile_interval": 0.2, "resync_interval": 0.5, "retry_backoff": 0.01}
    ctl_url = await emu.url_as("controller") if isinstance(emu, RealKube) else emu.url
    ctl = Kube(await build_api_client(api_url=ctl_url))
    try:
        async with running_agent(tmp_path, emu.url, **options) as (kube, agent, root, src):
            yield Rig(emu, kube, ctl, agent, root, src)
    finally:
        await ctl.close()
        await emu.stop()


async def test_download_heal_override_delete_and_aggregate(rig: Rig) -> None:
    emu = rig.emu
    await emu.put_object(API, "basemodels", basemodel("tiny", f"file://{rig.src}/v1"))
    await emu.put_object(API, "basemodels", basemodel("elsewhere", f"file://{rig.src}/v1", nodeSelector={"zone": "b"}))
    await emu.put_object(
        API,
        "clusterbasemodels",
        {
            "apiVersion": API,
            "kind": "ClusterBaseModel",
            "metadata": {"name": "shared"},
            "spec": {
                "storage": {
                    "storageUri": f"file://{rig.src}/v1",
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                            ]
                        }
                    },
                }
            },
        },
    )
    ready = await eventually(
        lambda: (rig.entry("team.basemodel.tiny") or {}).get("status") == "Ready" and rig.entry("team.basemodel.tiny")
    )
    assert ready["config"]["parameters"] == 2 * 64 * 64
    assert ready["config"]["modelArchitecture"] == "LlamaForCausalLM"
    await eventually(lambda: (rig.entry("clusterbasemodel.shared") or {}).get("status") == "Ready")
    assert (rig.root / "team" / "tiny" / "model.safetensors").exists()
    assert (rig.root / "_cluster" / "shared" / "config.json").exists()
    assert rig.entry("team.basemodel.elsewhere") is None and not (rig.root / "team" / "elsewhere").exists()
    resources = json.loads(rig.cm()["data"][RESOURCES_KEY])  # type: ignore[index]
    assert resources["cpuCount"] >= 1 and resources["modelsRootTotalBytes"] > 0
    tiny_label = label_key(PREFIX, ModelRef("BaseModel", "team", "tiny"))
    await eventually(lambda: rig.labels().get(tiny_label) == "Ready")
    assert rig.labels()["zone"] == "a"

    # Someone deletes the ConfigMap and edits a label: both are healed.
    await emu.remove("v1", "configmaps", NS, "node-1")
    node = emu.get("v1", "nodes", "", "node-1")
    node["metadata"]["labels"][tiny_label] = "Failed"  # type: ignore[index]
    await emu.put_object("v1", "nodes", node)  # type: ignore[arg-type]
    await eventually(lambda: (rig.entry("team.basemodel.tiny") or {}).get("status") == "Ready")
    await eventually(lambda: rig.labels().get(tiny_label) == "Ready")
    cm = rig.cm()
    cm["data"]["team.basemodel.tiny"] = '{"status":"Failed"}'  # type: ignore[index]
    await emu.put_object("v1", "configmaps", cm)  # type: ignore[arg-type]
    await eventually(lambda: (rig.entry("team.basemodel.tiny") or {}).get("status") == "Ready")

    # Controller-side aggregation into BaseModel status.
    assert await aggregate_once(rig.ctl, NS) >= 2
    status = emu.get(API, "basemodels", "team", "tiny")["status"]  # type: ignore[index]
    assert status["nodesReady"] == ["node-1"] and status["nodesFailed"] == [] and status["state"] == "Ready"
    assert status["modelInfo"]["modelArchitecture"] == "LlamaForCausalLM"
    assert status["modelInfo"]["parameters"] == 2 * 64 * 64
    assert await aggregate_once(rig.ctl, NS) == 0  # nothing changed: no writes
    assert emu.get(API, "basemodels", "team", "elsewhere")["status"]["state"] == "Pending"  # type: ignore[index]
    assert emu.get(API, "clusterbasemodels", "", "shared")["status"]["nodesReady"] == ["node-1"]  # type: ignore[index]

    # Override: a new version replaces the old copy.
    write_model(rig.src / "v2", 32, layers=3)
    await emu.put_object(API, "basemodels", basemodel("tiny", f"file://{rig.src}/v2"))
    await eventually(
        lambda: ((rig.entry("team.basemodel.tiny") or {}).get("config") or {}).get("parameters") == 3 * 32 * 32
    )

    # A node label change deselects the cluster model: it is removed at the next resync.
    node = emu.get("v1", "nodes", "", "node-1")
    node["metadata"]["labels"]["zone"] = "c"  # type: ignore[index]
    await emu.put_object("v1", "nodes", node)  # type: ignore[arg-type]
    await eventually(lambda: rig.entry("clusterbasemodel.shared") is None)
    await eventually(lambda: not (rig.root / "_cluster" / "shared").exists())

    # Delete: the copy, the entry and the label go.
    await emu.remove(API, "basemodels", "team", "tiny")
    await eventually(lambda: rig.entry("team.basemodel.tiny") is None)
    await eventually(lambda: tiny_label not in rig.labels())
    assert not (rig.root / "team" / "tiny").exists()
    assert rig.labels()["zone"] == "c"


async def test_failed_download_reported_and_bad_affinity(rig: Rig) -> None:
    await rig.emu.put_object(API, "basemodels", basemodel("missing", f"file://{rig.src}/nope"))
    bad = basemodel(
        "bad",
        f"file://{rig.src}/v1",
        nodeAffinity={
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Near"}]}]
            }
        },
    )
    await rig.emu.put_object(API, "basemodels", bad)
    failed = await eventually(
        lambda: (
            (rig.entry("team.basemodel.missing") or {}).get("status") == "Failed"
            and rig.entry("team.basemodel.missing")
        )
    )
    assert failed["reason"] == "SourceNotFound"
    invalid = await eventually(lambda: rig.entry("team.basemodel.bad"))
    assert invalid["status"] == "Failed" and "Near" in invalid["message"]
    label = label_key(PREFIX, ModelRef("BaseModel", "team", "missing"))
    await eventually(lambda: rig.labels().get(label) == "Failed")
    rolled = aggregate([rig.cm()])  # type: ignore[list-item]
    assert rolled[ModelRef("BaseModel", "team", "missing")]["state"] == "Failed"
    assert "modelInfo" not in rolled[ModelRef("BaseModel", "team", "missing")]


async def test_aggregator_loop_stops(rig: Rig) -> None:
    from modelferry.controller.agent.aggregate import run_aggregator

    await rig.emu.put_object(API, "basemodels", basemodel("agg", f"file://{rig.src}/v1"))
    stop = asyncio.Event()
    loop = asyncio.create_task(run_aggregator(rig.ctl, NS, stop, interval=0.05))
    await eventually(
        lambda: ((rig.emu.get(API, "basemodels", "team", "agg") or {}).get("status") or {}).get("state") == "Ready"
    )
    stop.set()
    await asyncio.wait_for(loop, 5)


async def test_unwanted_leftovers_are_cleaned(rig: Rig) -> None:
    stale = rig.root / "old-ns" / "gone"
    (stale / ".modelferry").mkdir(parents=True)
    (stale / ".modelferry" / "agent.json").write_text("{}")
    (stale / "w.bin").write_bytes(b"x" * 10)
    user = rig.root / "users-own-model"
    user.mkdir()
    await eventually(lambda: not stale.exists())
    assert user.exists()


def test_credentials_from_secret() -> None:
    import base64

    secret = {
        "data": {"AWS_ACCESS_KEY_ID": base64.b64encode(b"AKIAEXAMPLE").decode()},
        "stringData": {
            "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
            "AWS_S3_ENDPOINT": "http://minio:9000",
            "HF_TOKEN": "hf_abcdefghijklmnopqrstuv",
        },
    }
    creds = credentials_from_secret(secret, Credentials())
    assert creds.s3.access_key_id == "AKIAEXAMPLE"
    assert creds.s3.secret_access_key is not None and creds.s3.secret_access_key.get_secret_value() == "s3cr3t-value"
    assert creds.s3.endpoint_url == "http://minio:9000"
    assert creds.hf.token is not None


async def test_health_endpoints(tmp_path: Path) -> None:
    metrics = AgentMetrics()
    metrics.downloads_failed.labels("BaseModel", "AccessDenied").inc()
    api_up = {"ok": True}

    async def api() -> str | None:
        return None if api_up["ok"] else "Kubernetes API not reachable"

    async def root() -> str | None:
        return root_usable(tmp_path, read_only=False)

    async def live() -> str | None:
        return None

    runner, port = await serve(build_app(metrics, [api, root], [live]), 0, host="127.0.0.1")
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            for path in ("/healthz", "/readyz", "/livez"):
                async with http.get(base + path) as resp:
                    assert resp.status == 200, path
            async with http.get(base + "/metrics") as resp:
                text = await resp.text()
            assert 'modelferry_agent_downloads_failed_total{kind="BaseModel",reason="AccessDenied"} 1.0' in text
            assert "modelferry_agent_download_duration_seconds_bucket" in text
            api_up["ok"] = False
            async with http.get(base + "/readyz") as resp:
                assert resp.status == 503 and "not reachable" in await resp.text()
    finally:
        await runner.cleanup()
    assert root_usable(tmp_path / "nope", read_only=False) is not None
    assert root_usable(tmp_path, read_only=True) is None


class ConflictingKube:
    """Answers like the API server, with a 409 on the first ConfigMap patch (someone else wrote it)."""

    def __init__(self) -> None:
        from modelferry.controller.kube.client import ConflictError

        self.error = ConflictError
        self.cm = {"metadata": {"name": "node-1", "namespace": NS, "resourceVersion": "1"}, "data": {"stale": "x"}}
        self.node = {"metadata": {"name": "node-1", "resourceVersion": "5", "labels": {}}}
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.conflicts = 1

    async def get(self, res: Any, namespace: Any, name: str) -> dict[str, Any]:
        return self.cm if res.plural == "configmaps" else self.node

    async def patch(self, res: Any, namespace: Any, name: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        if res.plural == "configmaps" and self.conflicts:
            self.conflicts -= 1
            raise self.error("the object has been modified", obj=name)
        self.patches.append((res.plural, body))
        return {}


async def test_publishing_retries_on_conflict(tmp_path: Path) -> None:
    from modelferry.controller.agent.entries import ModelEntry, ModelStatus

    settings = AgentSettings()
    settings.agent = AgentOptions(node_name="node-1", namespace=NS, models_root=str(tmp_path))
    fake = ConflictingKube()
    metrics = AgentMetrics()
    agent = NodeAgent(settings, fake, Gopher(settings, TaskQueue(), sink=None, metrics=metrics), metrics)  # type: ignore[arg-type]
    agent.publish(ModelEntry(ModelRef("BaseModel", "team", "m"), ModelStatus.READY))
    await agent.reconcile()
    kinds = [p[0] for p in fake.patches]
    assert kinds == ["configmaps", "nodes"] and fake.conflicts == 0
    cm_patch = fake.patches[0][1]
    assert cm_patch["data"]["stale"] is None and "team.basemodel.m" in cm_patch["data"]
    assert cm_patch["metadata"]["resourceVersion"] == "1"  # optimistic concurrency: a stale write gets a 409
    assert fake.patches[1][1]["metadata"]["labels"] == {label_key(PREFIX, ModelRef("BaseModel", "team", "m")): "Ready"}
