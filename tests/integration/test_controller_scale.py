"""What the controller caches and asks for: only what it acts on, nothing per finished object, no GET per Event."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from modelferry.controller.kube.client import Kube, build_api_client
from modelferry.controller.kube.events import EventRecorder
from modelferry.controller.operator.router import Operator
from modelferry.controller.sync.modelsync import KIND as MODELSYNC
from modelferry.controller.sync.secret_reconciler import KIND as SECRET
from tests.integration.test_controller_modelsync import HF, TARGET, modelsync
from tests.servers.kube import KubeEmulator
from tests.servers.kube_controller import NS, Harness, eventually, running

API = "modelferry.io/v1alpha1"
SOURCE = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "model-source", "namespace": NS},
    "stringData": {"S3_SYNC_SRC__PATH": "s3://src/model/", "S3_SYNC_SRC__ENDPOINT": "http://minio:9000"},
}


def unrelated(i: int) -> dict[str, Any]:
    return {"metadata": {"name": f"unrelated-{i}", "namespace": NS}, "stringData": {"token": "x" * 64}}


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with running(KubeEmulator(garbage_collect=False)) as h:
        yield h


def api_requests(h: Harness, since: int = 0) -> list[tuple[str, str]]:
    """Requests other than the Lease's (which go on whatever else happens)."""
    return [r for r in h.emu.requests[since:] if "/leases" not in r[1]]


async def test_only_referenced_and_model_source_secrets_are_cached(harness: Harness) -> None:
    for i in range(120):
        await harness.emu.put_object("v1", "secrets", unrelated(i))
    for obj in (TARGET, SOURCE):
        await harness.apply(obj)
    controller = await harness.start(secret_page_size=50)
    await eventually(harness.job)
    op = controller.operator
    assert set(op.refs.informers[NS].cache) == {(NS, "demo-models")}
    assert {k for inf in op.secrets.sources[NS] for k in inf.cache} == {(NS, "model-source")}
    lists = [p for m, p in harness.emu.requests if m == "GET" and p.startswith(f"/api/v1/namespaces/{NS}/secrets?")]
    assert any("limit=50" in p for p in lists) and any("continue=" in p for p in lists)  # paged
    assert any("fieldSelector=metadata.name%3Dmodel-source" in p for p in lists)
    # The data connection changes: the watch brings it, and the Job is replaced.
    first = harness.job()
    assert first is not None
    await harness.emu.put_object("v1", "secrets", {**unrelated(3), "stringData": {"token": "changed"}})
    target_secret = copy.deepcopy(TARGET)
    target_secret["stringData"]["AWS_S3_BUCKET"] = "another-bucket"
    await harness.apply(target_secret)
    await eventually(lambda: (harness.job() or first)["metadata"]["uid"] != first["metadata"]["uid"])
    assert set(op.refs.informers[NS].cache) == {(NS, "demo-models")}
    assert op.refs.fetches == 0  # everything came from the list and the watch


async def test_a_name_referenced_after_the_list_is_fetched_once(harness: Harness) -> None:
    for obj in (TARGET, HF):
        await harness.apply(obj)
    controller = await harness.start()
    await eventually(controller.acting.is_set)
    op = controller.operator
    assert op.refs.informers[NS].cache == {}  # nobody referenced them when the watch listed
    await harness.apply(modelsync(), API, "modelsyncs")
    await eventually(lambda: harness.job("modelsync-granite"))
    assert op.refs.fetches == 2  # demo-models and hf-token, one targeted GET each
    gets = [p for m, p in harness.emu.requests if m == "GET" and f"/namespaces/{NS}/secrets/" in p]
    assert sorted(gets) == [f"/api/v1/namespaces/{NS}/secrets/demo-models", f"/api/v1/namespaces/{NS}/secrets/hf-token"]
    # Later changes arrive by the watch, not by more GETs.
    hf = copy.deepcopy(HF)
    hf["stringData"]["HF_TOKEN"] = "hf_" + "z" * 30
    await harness.apply(hf)
    first = harness.job("modelsync-granite")
    await eventually(lambda: (harness.job("modelsync-granite") or first) is not first)
    assert op.refs.fetches == 2


async def test_finished_objects_cost_no_requests_on_resync(harness: Harness) -> None:
    for obj in (TARGET, HF, SOURCE):
        await harness.apply(obj)
    await harness.apply(modelsync(), API, "modelsyncs")
    controller = await harness.start()
    await eventually(lambda: harness.job() and harness.job("modelsync-granite"))
    done = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    for name in ("synchronize-model", "modelsync-granite"):
        job = harness.job(name) or {}
        pod = {
            "metadata": {"name": f"{name}-pod", "namespace": NS, "labels": harness.pod_labels(name)},
            "status": {"phase": "Succeeded"},
        }
        await harness.emu.put_object("v1", "pods", pod)
        await harness.emu.set_status("batch/v1", "jobs", NS, job["metadata"]["name"], done)
    status = lambda: (harness.emu.get(API, "modelsyncs", NS, "granite") or {}).get("status") or {}  # noqa: E731
    await eventually(lambda: status().get("phase") == "Succeeded")
    await eventually(lambda: harness.events("SyncSucceeded") and len(harness.events("SyncSucceeded")) == 2)
    op = controller.operator
    await eventually(lambda: len(op.queue) == 0 and op.queue.idle.is_set())
    since = len(harness.emu.requests)
    counts = dict(op.reconciles)
    op.resync()
    await eventually(
        lambda: (
            op.reconciles[SECRET] > counts[SECRET]
            and op.reconciles[MODELSYNC] > counts[MODELSYNC]
            and op.queue.idle.is_set()
        )
    )
    assert api_requests(harness, since) == []
    # Pods come from the label-selected watch; a LIST only once, at the Job's transition to Succeeded,
    # when the Pod's final state had not arrived (these Pods carry no termination message).
    assert len([p for _, p in harness.emu.requests if "/pods?" in p and "job-name" in p]) <= 1


async def test_events_are_created_without_a_get_and_counted_on_conflict(harness: Harness) -> None:
    await harness.apply(TARGET)
    obj = harness.emu.get("v1", "secrets", NS, "demo-models")
    assert obj is not None
    kube = Kube(await build_api_client(api_url=harness.emu.url))
    try:
        recorder = EventRecorder(kube)
        for _ in range(2):
            await recorder.emit(obj, "Warning", "Tested", "same message")
        restarted = EventRecorder(kube)  # no memory of the count: one GET, only after the conflict
        await restarted.emit(obj, "Warning", "Tested", "same message")
    finally:
        await kube.close()
    events = harness.events("Tested")
    assert len(events) == 1 and events[0]["count"] == 3
    methods = [m for m, p in harness.emu.requests if "/events" in p]
    assert methods == ["POST", "POST", "PATCH", "POST", "GET", "PATCH"]


async def test_a_secret_event_requeues_exactly_its_readers(harness: Harness) -> None:
    kube = Kube(await build_api_client(api_url=harness.emu.url))
    try:
        op = Operator(kube, harness.settings())
        op.modelsync._on_modelsync("ADDED", {**modelsync("a"), "metadata": {"name": "a", "namespace": NS}})
        other = modelsync("b", source={"uri": "s3://bucket/m", "credentialsSecret": "s3-creds"})
        op.modelsync._on_modelsync("ADDED", other)
        source = {**SOURCE, "data": {}}
        op.secrets.sources[NS][0].cache[(NS, "model-source")] = source  # the informer caches, then calls the handler
        op.secrets._on_source("ADDED", source)
        op.queue._due.clear()
        op._on_referenced(NS, "hf-token")
        assert set(op.queue._due) == {(MODELSYNC, NS, "a")}
        op.queue._due.clear()
        op._on_referenced(NS, "demo-models")
        assert set(op.queue._due) == {(MODELSYNC, NS, "a"), (MODELSYNC, NS, "b"), (SECRET, NS, "model-source")}
        op.queue._due.clear()
        op.modelsync._on_modelsync("DELETED", other)
        op._on_referenced(NS, "s3-creds")
        assert set(op.queue._due) == {(MODELSYNC, NS, "b")}  # the deletion itself; s3-creds has no reader left
    finally:
        await kube.close()
