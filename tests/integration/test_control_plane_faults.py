"""The controller and the node agent under API faults, through a fault-injecting proxy in front of the emulator.

Every fault here used to end the process (a cut watch: exit 3; one failed Lease renewal: exit 1). Now the
watches resume from their resourceVersion, leadership survives blips shorter than the renew deadline,
is given up (caches kept) on a longer outage or when another identity takes the Lease, and is regained.
Waits are on counters and events; the only timing is the scaled-down lease (3 s / 2 s / 0.2 s), which
stands for client-go's 15 s / 10 s / 2 s: a "20 s" outage is one longer than the lease, a "4 s" blip
two failed renewals inside the renew deadline.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelferry.controller.agent.kubeside import NodeAgent
from modelferry.controller.kube.lease import micro_time
from modelferry.controller.operator.process import Controller
from tests.integration.test_agent_kube import basemodel, running_agent
from tests.servers.faultproxy import FaultProxy
from tests.servers.kube import KubeEmulator
from tests.servers.kube_controller import NS, Harness, eventually, running

LEASES = "coordination.k8s.io/v1"


def secrets(ns: str = NS, suffix: str = "") -> list[dict[str, Any]]:
    target_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "demo-models", "namespace": ns},
        "stringData": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s" * 12, "AWS_S3_BUCKET": "models-bucket"},
    }
    source = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "model-source", "namespace": ns},
        "stringData": {"S3_SYNC_SRC__PATH": f"s3://src/model{suffix}/", "S3_SYNC_SRC__ENDPOINT": "http://minio:9000"},
    }
    return [target_secret, source]


class Rig:
    def __init__(self, harness: Harness, proxy: FaultProxy) -> None:
        self.h, self.proxy = harness, proxy

    async def start(self, **kw: Any) -> Controller:
        controller = await self.h.start(api_url=self.proxy.url, **kw)
        await eventually(controller.ready)  # leading, caches filled, workers running
        return controller

    async def apply_source(self, suffix: str = "") -> None:
        for obj in secrets(suffix=suffix):
            await self.h.apply(obj)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with running(KubeEmulator(garbage_collect=False)) as harness:
        proxy = FaultProxy(harness.emu.url)
        await proxy.start()
        try:
            yield Rig(harness, proxy)
        finally:
            await harness.close()
            await proxy.stop()


def alive(h: Harness) -> bool:
    return all(not task.done() for _, _, task in h.controllers)


async def readyz(controller: Controller) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{controller.port}/readyz") as resp:
        return resp.status, await resp.text()


# --- the controller ------------------------------------------------------------------------------------
async def test_watch_cut_mid_body_resumes_without_relist(rig: Rig) -> None:
    controller = await rig.start()
    informers = controller.operator.informers + controller.operator.dependent
    await eventually(lambda: rig.proxy.streams() == len(informers))
    assert rig.proxy.cut() == len(informers)
    relists = [i.relists for i in informers]
    await rig.apply_source()
    await eventually(rig.h.job)
    await eventually(lambda: sum(i.resumes for i in informers) >= 1)
    assert [i.relists for i in informers] == relists  # resumed from the resourceVersion, nothing listed again
    assert alive(rig.h) and controller.acting.is_set()


async def test_watch_errors_429_and_5xx_are_retried(rig: Rig) -> None:
    controller = await rig.start()
    throttled = rig.proxy.fail("GET", "watch=true", 429, times=3, retry_after=0.2)
    broken = rig.proxy.fail("GET", "watch=true", 503, times=3)
    await eventually(lambda: rig.proxy.cut() > 0)
    await eventually(lambda: throttled.hits == 3 and broken.hits == 3)
    await rig.apply_source()
    await eventually(rig.h.job)
    assert alive(rig.h) and controller.elector.lost == 0


async def test_watch_relists_on_410_after_compaction(rig: Rig) -> None:
    controller = await rig.start()
    informers = controller.operator.informers + controller.operator.dependent
    await rig.apply_source()
    first = await eventually(rig.h.job)
    relists = sum(i.relists for i in informers)
    rig.h.emu.compact()  # every watch's resourceVersion is now too old
    assert rig.proxy.cut() > 0
    await eventually(lambda: sum(i.relists for i in informers) > relists)
    await rig.h.emu.remove("v1", "secrets", NS, "model-source")
    await rig.apply_source(suffix="-2")  # a new source: the Job is replaced
    await eventually(lambda: (rig.h.job() or first)["metadata"]["uid"] != first["metadata"]["uid"])
    assert alive(rig.h)


async def test_api_refusing_connections_longer_than_the_lease(rig: Rig) -> None:
    controller = await rig.start()
    elector = controller.elector
    await rig.proxy.refuse()
    # Outage longer than the renew deadline and the lease: leadership goes, the process stays.
    await eventually(lambda: elector.lost == 1 and not controller.acting.is_set(), timeout=20)
    primary = controller.operator.informers
    await eventually(lambda: all(i.failures >= 2 for i in primary), timeout=20)
    assert (await readyz(controller))[0] == 503
    await rig.apply_source()  # changes while the controller cannot see them
    await rig.proxy.accept()
    await eventually(lambda: elector.acquired == 2 and controller.acting.is_set(), timeout=20)
    await eventually(rig.h.job)
    assert alive(rig.h)
    status, text = await readyz(controller)
    assert status == 200 and "leading" in text


async def test_blip_shorter_than_the_renew_deadline_keeps_leadership(rig: Rig) -> None:
    controller = await rig.start()
    elector = controller.elector
    renewals = elector.renewals
    await rig.proxy.refuse()
    await eventually(lambda: elector.failed_renewals >= 2)
    await rig.proxy.accept()
    await eventually(lambda: elector.renewals > renewals + 1)
    assert elector.lost == 0 and elector.acquired == 1 and controller.acting.is_set()
    await rig.apply_source()
    await eventually(rig.h.job)
    assert alive(rig.h)


async def test_renewal_failing_once_keeps_leadership(rig: Rig) -> None:
    controller = await rig.start()
    elector = controller.elector
    rule = rig.proxy.fail("PUT", "/leases/", 500, times=1)
    await eventually(lambda: rule.hits == 1)
    renewals = elector.renewals
    await eventually(lambda: elector.renewals > renewals)
    assert elector.failed_renewals == 1 and elector.lost == 0 and controller.acting.is_set()
    assert alive(rig.h)


async def test_lease_taken_by_another_identity_is_lost_then_regained(rig: Rig) -> None:
    controller = await rig.start()
    elector = controller.elector
    lease = copy.deepcopy(rig.h.emu.get(LEASES, "leases", NS, "modelferry-controller"))
    assert lease is not None
    lease["spec"].update(holderIdentity="intruder", leaseDurationSeconds=2, renewTime=micro_time(datetime.now(UTC)))
    await rig.h.emu.put_object(LEASES, "leases", lease)
    await eventually(lambda: elector.lost == 1 and not controller.acting.is_set())
    status, text = await readyz(controller)
    assert status == 503 and "intruder" in text
    caches = controller.operator.jobs[NS]
    await rig.apply_source()
    # The intruder never renews: two seconds after we saw its write, the Lease is ours again.
    await eventually(lambda: elector.acquired == 2 and controller.acting.is_set(), timeout=15)
    await eventually(rig.h.job)
    assert controller.operator.jobs[NS] is caches and caches.synced.is_set()  # caches kept, not rebuilt
    held = rig.h.emu.get(LEASES, "leases", NS, "modelferry-controller") or {}
    assert held["spec"]["holderIdentity"] == elector.identity
    assert alive(rig.h)


async def test_controller_starting_while_the_api_is_down(rig: Rig) -> None:
    await rig.proxy.refuse()
    controller = await rig.h.start(api_url=rig.proxy.url)
    await eventually(lambda: controller.elector.failed_attempts >= 3)
    await rig.apply_source()
    await rig.proxy.accept()
    await eventually(rig.h.job, timeout=20)
    assert alive(rig.h)


# --- the node agent --------------------------------------------------------------------------------
class AgentRig:
    def __init__(self, emu: KubeEmulator, proxy: FaultProxy, agent: NodeAgent, src: Path) -> None:
        self.emu, self.proxy, self.agent, self.src = emu, proxy, agent, src

    def entry_status(self, key: str) -> str | None:
        import json

        cm = self.emu.get("v1", "configmaps", "modelferry", "node-1") or {}
        raw = (cm.get("data") or {}).get(key)
        return json.loads(raw).get("status") if raw else None

    def label(self, name: str) -> str | None:
        node = self.emu.get("v1", "nodes", "", "node-1") or {}
        labels = (node.get("metadata") or {}).get("labels") or {}
        return next((v for k, v in labels.items() if k.endswith(f"team.basemodel.{name}")), None)


@pytest.fixture
async def agent_rig(tmp_path: Path) -> AsyncIterator[AgentRig]:
    emu = KubeEmulator()
    await emu.start()
    await emu.put_object("v1", "nodes", {"metadata": {"name": "node-1", "labels": {"zone": "a"}}})
    proxy = FaultProxy(emu.url)
    await proxy.start()
    options = {
        "reconcile_interval": 300,  # a retry must come from the backoff, not from the periodic pass
        "resync_interval": 300,
        "retry_backoff": 0.01,
        "api_backoff_seconds": 0.05,
        "api_backoff_max_seconds": 0.5,
    }
    try:
        async with running_agent(tmp_path, proxy.url, hidden=32, **options) as (_, agent, _, src):
            yield AgentRig(emu, proxy, agent, src)
    finally:
        await proxy.stop()
        await emu.stop()


async def test_agent_watch_cut_mid_body_resumes(agent_rig: AgentRig) -> None:
    r = agent_rig
    await eventually(lambda: all(i.synced.is_set() for i in r.agent.informers))
    await eventually(lambda: r.proxy.streams() == 2)
    assert r.proxy.cut() == 2
    await r.emu.put_object("modelferry.io/v1alpha1", "basemodels", basemodel("tiny", f"file://{r.src}/v1"))
    await eventually(lambda: r.entry_status("team.basemodel.tiny") == "Ready")
    assert sum(i.resumes for i in r.agent.informers) >= 1
    assert all(i.relists == 1 for i in r.agent.informers)


@pytest.mark.parametrize("failures", [2, 8], ids=["blip", "long-outage"])
async def test_agent_survives_the_api_refusing_connections(agent_rig: AgentRig, failures: int) -> None:
    r = agent_rig
    await eventually(lambda: all(i.synced.is_set() for i in r.agent.informers) and r.agent.api_ok)
    await r.proxy.refuse()
    await eventually(lambda: all(i.failures >= failures for i in r.agent.informers), timeout=30)
    await r.emu.put_object("modelferry.io/v1alpha1", "basemodels", basemodel("tiny", f"file://{r.src}/v1"))
    await r.proxy.accept()
    await eventually(lambda: r.entry_status("team.basemodel.tiny") == "Ready" and r.label("tiny") == "Ready")


async def test_agent_configmap_and_node_writes_are_retried(agent_rig: AgentRig) -> None:
    r = agent_rig
    await eventually(lambda: r.agent.api_ok)
    cm_fault = r.proxy.fail("PATCH", "/configmaps/node-1", 500, times=2)
    node_fault = r.proxy.fail("PATCH", "/nodes/node-1", 429, times=1, retry_after=0.1)
    await r.emu.put_object("modelferry.io/v1alpha1", "basemodels", basemodel("tiny", f"file://{r.src}/v1"))
    await eventually(lambda: r.entry_status("team.basemodel.tiny") == "Ready" and r.label("tiny") == "Ready")
    assert cm_fault.hits == 2 and node_fault.hits == 1 and r.agent.failures >= 3


async def test_agent_starting_while_the_api_is_down(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from modelferry.cli.agent import build_agent_settings, run_agent

    emu = KubeEmulator()
    await emu.start()
    await emu.put_object("v1", "nodes", {"metadata": {"name": "node-1"}})
    proxy = FaultProxy(emu.url)
    await proxy.start()
    await proxy.refuse()
    settings = build_agent_settings(
        {"node_name": "node-1", "models_root": str(tmp_path), "port": 0, "namespace": "modelferry"}
    )
    settings.agent.api_backoff_seconds = 0.05
    settings.agent.api_backoff_max_seconds = 0.2
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(settings, kubeconfig=None, api_url=proxy.url, stop=stop))
    try:
        await eventually(lambda: "reading node node-1 failed, retrying" in caplog.text)
        await proxy.accept()
        await eventually(lambda: emu.get("v1", "configmaps", "modelferry", "node-1") is not None)
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await proxy.stop()
        await emu.stop()
