"""ModelSync, leader election, relisting and the health server against the API emulator over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.servers.kube_controller import NS, Harness, eventually, running

API = "modelferry.io/v1alpha1"
TARGET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "demo-models", "namespace": NS},
    "stringData": {
        "AWS_ACCESS_KEY_ID": "dest-access-key",
        "AWS_SECRET_ACCESS_KEY": "dest-secret-key-value",
        "AWS_S3_ENDPOINT": "http://minio:9000",
        "AWS_S3_BUCKET": "models-bucket",
    },
}
HF = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "hf-token", "namespace": NS},
    "stringData": {"HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyz"},
}


def modelsync(name: str = "granite", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "source": {
            "uri": "hf://ibm-granite/granite-3.1-2b-instruct",
            "revision": "main",
            "credentialsSecret": "hf-token",
        },
        "target": {"dataConnection": "demo-models", "path": "models/"},
        "transfer": {"concurrency": 8, "partSize": "32MiB"},
    }
    base.update(spec)
    return {"apiVersion": API, "kind": "ModelSync", "metadata": {"name": name, "namespace": NS}, "spec": base}


@pytest.fixture
async def harness(kube_backend: Callable[..., Any]) -> AsyncIterator[Harness]:
    async with running(kube_backend(garbage_collect=False)) as h:
        yield h


def ms_status(h: Harness, name: str = "granite") -> dict[str, Any]:
    obj = h.emu.get(API, "modelsyncs", NS, name) or {}
    return obj.get("status") or {}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == kind)


async def finish_pod(h: Harness, job: str, message: dict[str, Any], exit_code: int) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{job}-abcde", "namespace": NS, "labels": h.pod_labels(job)},
        "status": {
            "containerStatuses": [
                {
                    "name": "sync",
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "message": json.dumps(message),
                            "finishedAt": "2026-01-01T00:00:10Z",
                        }
                    },
                }
            ]
        },
    }
    await h.emu.put_object("v1", "pods", pod)


async def test_happy_path_reaches_succeeded(harness: Harness) -> None:
    for obj in (TARGET, HF):
        await harness.apply(obj)
    await harness.apply(modelsync(), API, "modelsyncs")
    await harness.start()
    job = await eventually(lambda: harness.job("modelsync-granite"))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:4] == [
        "sync",
        "hf://ibm-granite/granite-3.1-2b-instruct",
        "s3://$(MF_DEST_BUCKET)/models/",
        "--json",
    ]
    assert "--revision" in container["args"]
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in json.dumps(job)
    env = {e["name"]: e for e in container["env"]}
    assert env["MODELFERRY_SOURCE__HF__TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN"}
    assert env["MODELFERRY_TRANSFER__PART_SIZE"]["value"] == str(32 << 20)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ModelSync"
    await eventually(lambda: ms_status(harness).get("phase") == "Pending")
    await harness.emu.set_status(
        "batch/v1", "jobs", NS, "modelsync-granite", {"active": 1, "startTime": "2026-01-01T00:00:00Z"}
    )
    await eventually(lambda: ms_status(harness).get("phase") == "Running")
    summary = {"status": "complete", "revision": "abc123", "files": 3, "bytes": 300, "files_copied": 2,
               "bytes_copied": 200, "files_skipped": 1, "bytes_skipped": 100}  # fmt: skip
    await finish_pod(harness, "modelsync-granite", summary, 0)
    await harness.emu.set_status(
        "batch/v1", "jobs", NS, "modelsync-granite",
        {"succeeded": 1, "completionTime": "2026-01-01T00:00:10Z", "conditions": [{"type": "Complete", "status": "True"}]},
    )  # fmt: skip
    status = await eventually(lambda: (s := ms_status(harness)).get("phase") == "Succeeded" and s)
    assert status["filesDone"] == 3 and status["bytesTotal"] == 300 and status["resolvedRevision"] == "abc123"
    assert condition(status, "Synced")["status"] == "True"
    assert condition(status, "Ready")["status"] == "True"
    assert status["observedGeneration"] == 1
    assert status["jobName"] == "modelsync-granite"
    await eventually(lambda: harness.events("SyncSucceeded"))


async def test_failed_job_reports_reason(harness: Harness) -> None:
    for obj in (TARGET, HF):
        await harness.apply(obj)
    await harness.apply(modelsync(), API, "modelsyncs")
    await harness.start()
    await eventually(lambda: harness.job("modelsync-granite"))
    await finish_pod(harness, "modelsync-granite", {"status": "failed", "reason": "SourceNotFound",
                                                    "message": "repo not found", "exit_code": 3}, 3)  # fmt: skip
    await harness.emu.set_status(
        "batch/v1", "jobs", NS, "modelsync-granite",
        {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]},
    )  # fmt: skip
    status = await eventually(lambda: (s := ms_status(harness)).get("phase") == "Failed" and s)
    synced = condition(status, "Synced")
    assert synced["reason"] == "SourceNotFound" and synced["message"] == "repo not found"
    await eventually(lambda: harness.events("SyncFailed"))


@pytest.mark.parametrize(
    ("obj", "secrets", "reason"),
    [
        (modelsync(source={"uri": "hf://"}), [TARGET], "InvalidSourceURI"),
        (modelsync(), [TARGET], "CredentialsSecretNotFound"),
        (modelsync(), [HF], "DataConnectionNotFound"),
        (modelsync(target={"uri": "s3://"}), [HF], "InvalidTargetURI"),
        (modelsync(source={"uri": "hf://a/b", "credentialsSecret": "empty"}), [TARGET], "CredentialsSecretInvalid"),
    ],
)
async def test_bad_input_sets_ready_false_without_job(
    harness: Harness, obj: dict[str, Any], secrets: list[dict[str, Any]], reason: str
) -> None:
    for secret in secrets:
        await harness.apply(secret)
    await harness.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "empty", "namespace": NS},
                         "stringData": {"unrelated": "x"}})  # fmt: skip
    await harness.apply(obj, API, "modelsyncs")
    controller = await harness.start()
    status = await eventually(lambda: (s := ms_status(harness)).get("conditions") and s)
    ready = condition(status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == reason
    assert ready["message"]
    assert await eventually(lambda: harness.events(reason))
    assert harness.job("modelsync-granite") is None
    key = ("ModelSync", NS, "granite")
    await harness.reconciled(controller, key, harness.emu.get(API, "modelsyncs", NS, "granite") or {})
    reconciles = len([r for r in harness.emu.requests if "/status" in r[1]])
    # no crash loop: a reconcile that saw the status it wrote does not rewrite it
    await harness.reconciled(controller, key, harness.emu.get(API, "modelsyncs", NS, "granite") or {})
    assert len([r for r in harness.emu.requests if "/status" in r[1]]) == reconciles


async def test_deleting_modelsync_removes_job(harness: Harness) -> None:
    for obj in (TARGET, HF):
        await harness.apply(obj)
    await harness.apply(modelsync(), API, "modelsyncs")
    await harness.start()
    await eventually(lambda: harness.job("modelsync-granite"))
    await harness.emu.remove(API, "modelsyncs", NS, "granite")
    await eventually(lambda: harness.job("modelsync-granite") is None)


async def test_two_controllers_one_leader(harness: Harness) -> None:
    for obj in (TARGET, HF):
        await harness.apply(obj)
    await harness.apply(modelsync(), API, "modelsyncs")
    first = await harness.start(identity="one")
    second = await harness.start(identity="two")
    await eventually(lambda: harness.job("modelsync-granite"))
    await eventually(lambda: first.elector.is_leader.is_set() or second.elector.is_leader.is_set())
    # the other one has tried since, and found the Lease held by the leader
    await eventually(
        lambda: (
            first.elector.other_holder == second.elector.identity
            or second.elector.other_holder == first.elector.identity
        )
    )
    assert first.elector.is_leader.is_set() != second.elector.is_leader.is_set()
    assert len([r for r in harness.emu.requests if r[0] == "POST" and "/jobs" in r[1]]) == 1
    leader, standby = (first, second) if first.elector.is_leader.is_set() else (second, first)
    assert await harness.stop(leader) == 0  # releases the Lease
    await eventually(standby.elector.is_leader.is_set)
    lease = harness.emu.get("coordination.k8s.io/v1", "leases", NS, "modelferry-controller")
    assert lease["spec"]["holderIdentity"] == standby.elector.identity


async def test_relists_after_410_gone(harness: Harness) -> None:
    harness.emu.gone_next.add("secrets")
    controller = await harness.start()
    informers = [*controller.operator.secrets.sources[NS], controller.operator.refs.informers[NS]]
    await eventually(lambda: sum(i.relists for i in informers) > len(informers))  # one of them listed twice
    await harness.apply(TARGET)
    await harness.apply(HF)
    await harness.apply(modelsync(), API, "modelsyncs")
    assert await eventually(lambda: harness.job("modelsync-granite"))


async def test_health_and_metrics(harness: Harness) -> None:
    for obj in (TARGET, HF):
        await harness.apply(obj)
    await harness.apply(modelsync(), API, "modelsyncs")
    controller = await harness.start()
    await eventually(lambda: harness.job("modelsync-granite"))
    await eventually(controller.ready)
    base = f"http://127.0.0.1:{controller.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/healthz") as resp:
            assert resp.status == 200
        async with session.get(base + "/readyz") as resp:
            assert resp.status == 200
        text = ""
        for _ in range(200):  # the counter moves when the reconcile that created the Job returns
            async with session.get(base + "/metrics") as resp:
                text = await resp.text()
            if 'modelferry_controller_reconciles_total{kind="ModelSync",result="ok"}' in text:
                break
            await asyncio.sleep(0.02)
    assert 'modelferry_controller_reconciles_total{kind="ModelSync",result="ok"}' in text
    assert "modelferry_controller_queue_depth" in text
    assert 'modelferry_controller_jobs{phase="Pending"} 1.0' in text
    assert "modelferry_controller_leader 1.0" in text


async def test_sigterm_style_stop_drains(harness: Harness) -> None:
    controller = await harness.start(leader_election=False)
    await eventually(controller.ready)
    assert await harness.stop(controller) == 0
    assert controller.operator.queue.closed


async def test_finished_job_removed_by_ttl_is_not_rerun(harness: Harness) -> None:
    for obj in (TARGET, HF):
        await harness.apply(obj)
    await harness.apply(modelsync(), API, "modelsyncs")
    controller = await harness.start()
    job = await eventually(lambda: harness.job("modelsync-granite"))
    await harness.emu.set_status(
        "batch/v1",
        "jobs",
        NS,
        "modelsync-granite",
        {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
    )
    await eventually(lambda: ms_status(harness).get("phase") == "Succeeded")
    await harness.emu.remove("batch/v1", "jobs", NS, "modelsync-granite")  # the TTL controller's doing
    await harness.reconciled(controller, ("ModelSync", NS, "granite"), job)  # it saw the Job gone
    assert harness.job("modelsync-granite") is None
    assert ms_status(harness)["phase"] == "Succeeded"
    assert ms_status(harness)["inputsHash"] == job["metadata"]["annotations"]["modelferry.io/inputs-hash"]


async def test_relist_reports_objects_deleted_while_disconnected(harness: Harness) -> None:
    from modelferry.controller.kube.client import SECRETS, Kube, build_api_client
    from modelferry.controller.kube.watch import Informer

    seen: list[tuple[str, str]] = []
    await harness.apply(TARGET)
    kube = Kube(await build_api_client(api_url=harness.emu.url))
    try:
        informer = Informer(kube, SECRETS, lambda kind, obj: seen.append((kind, obj["metadata"]["name"])), namespace=NS)
        await informer.relist()
        await harness.emu.remove("v1", "secrets", NS, "demo-models")
        await harness.apply(HF)
        await informer.relist()
    finally:
        await kube.close()
    assert seen == [("ADDED", "demo-models"), ("DELETED", "demo-models"), ("ADDED", "hf-token")]
