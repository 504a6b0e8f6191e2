"""Tenant attacks on the running controller (API emulator over real HTTP): leaks into status and Events, spec.job."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.test_controller_modelsync import API, condition, finish_pod, ms_status
from tests.servers.kube import KubeEmulator
from tests.servers.kube_controller import NS, Harness, eventually, running

SECRET_KEY = "tenantSecretKeyValue-5f2c"  # no well-known token shape: only the registered value masks it
HF_TOKEN = "tenantHubToken-7d1e9a"
CREDS = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "src-creds", "namespace": NS},
    "stringData": {"AWS_ACCESS_KEY_ID": "AKIATENANT", "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "HF_TOKEN": HF_TOKEN},
}


def modelsync(**spec: Any) -> dict[str, Any]:
    base = {"source": {"uri": "s3://src-bucket/model", "credentialsSecret": "src-creds"},
            "target": {"uri": "s3://dst-bucket/model"}}  # fmt: skip
    base.update(spec)
    return {"apiVersion": API, "kind": "ModelSync", "metadata": {"name": "granite", "namespace": NS}, "spec": base}


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with running(KubeEmulator(garbage_collect=False)) as h:
        yield h


def leaked(h: Harness) -> list[str]:
    """Every place the secret value shows up in what tenants can read (status, Events)."""
    places = []
    obj = h.emu.get(API, "modelsyncs", NS, "granite") or {}
    for value in (SECRET_KEY, HF_TOKEN):
        if value in json.dumps(obj.get("status") or {}):
            places.append(f"status: {value}")
        places += [f"Event {e['reason']}: {value}" for e in h.emu.all("v1", "events", NS) if value in json.dumps(e)]
    return places


async def test_credential_expanded_into_failure_record_never_reaches_status_or_events(harness: Harness) -> None:
    """What `$(MODELFERRY_SOURCE__HF__TOKEN)` in a field did on main: the pod's failure record and the Job's
    Failed condition quote the secret; the controller must mask it everywhere it copies them."""
    await harness.apply(CREDS)
    await harness.apply(modelsync(), API, "modelsyncs")
    await harness.start()
    await eventually(lambda: harness.job("modelsync-granite"))
    quote = f"s3://src-bucket/model-{SECRET_KEY}/{HF_TOKEN}: not found"
    await finish_pod(harness, "modelsync-granite",
                     {"status": "failed", "reason": "SourceNotFound", "message": quote, "exit_code": 3}, 3)  # fmt: skip
    await harness.emu.set_status(
        "batch/v1", "jobs", NS, "modelsync-granite",
        {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                                      "message": f"container sync exited 3: {quote}"}]},
    )  # fmt: skip
    status = await eventually(lambda: (s := ms_status(harness)).get("phase") == "Failed" and s)
    await eventually(lambda: harness.events("SyncFailed"))
    assert condition(status, "Synced")["message"] == "s3://src-bucket/model-***/***: not found"
    assert leaked(harness) == []


async def test_tenant_chosen_job_image_is_refused_with_the_setting_named(harness: Harness) -> None:
    await harness.apply(CREDS)
    await harness.apply(modelsync(job={"image": "evil.example.com/exfiltrate:1"}), API, "modelsyncs")
    await harness.start()
    status = await eventually(lambda: (s := ms_status(harness)).get("conditions") and s)
    ready = condition(status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "JobPolicyAllowedImages"
    assert "MODELFERRY_CONTROLLER__JOB_POLICY__ALLOWED_IMAGES" in ready["message"]
    assert await eventually(lambda: harness.events("JobPolicyAllowedImages"))
    assert harness.job("modelsync-granite") is None


async def test_namespaced_controller_never_asks_for_cluster_wide_tenant_objects(harness: Harness) -> None:
    """With --namespace, every request for Secrets, Jobs, Pods, Events and the namespaced kinds names a
    watched namespace, so the Roles of kustomize/components/namespaced are enough."""
    await harness.apply(CREDS)
    await harness.apply(modelsync(), API, "modelsyncs")
    await harness.start(namespaces=[NS])
    await eventually(lambda: harness.job("modelsync-granite"))
    await eventually(lambda: ms_status(harness).get("phase"))
    tenant = ("secrets", "jobs", "pods", "events", "services", "modelsyncs", "trainingruns", "pytorchjobs")
    paths = [r[1] for r in harness.emu.requests if r[1].rstrip("/").split("?")[0].split("/")[-1] in tenant
             or any(f"/{kind}/" in r[1] for kind in tenant)]  # fmt: skip
    assert paths
    assert all(f"/namespaces/{NS}/" in p for p in paths), [p for p in paths if f"/namespaces/{NS}/" not in p]
