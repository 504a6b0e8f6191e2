"""ModelServer -> Deployment/Service -> status and Events, against the API emulator with the real client.

There are no kubelets or Deployment controllers in the emulator: the tests write Deployment status
and pods (crash loops, OOM kills, image pulls, failed model downloads, unschedulable pods) themselves.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.servers.kube import KubeEmulator
from tests.servers.kube_controller import NS, Harness, eventually, running

API = "modelferry.io/v1alpha1"
APPS = "apps/v1"
NAME = "chat"
SETTINGS: dict[str, Any] = {"training": {"enabled": False}, "aggregate_seconds": 0.1}


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with running(KubeEmulator(garbage_collect=False)) as h:
        yield h


def modelserver(model: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model or {"baseModel": "llama"}, "engine": {"type": "vllm"}, "replicas": 1}
    body.update(spec)
    return {"apiVersion": API, "kind": "ModelServer", "metadata": {"name": NAME, "namespace": NS}, "spec": body}


async def put_basemodel(h: Harness, nodes_ready: list[str]) -> None:
    """A BaseModel, and the node agents' ConfigMaps saying which nodes hold it (the controller rolls them up)."""
    body = {
        "apiVersion": API,
        "kind": "BaseModel",
        "metadata": {"name": "llama", "namespace": NS},
        "spec": {"storage": {"storageUri": "hf://meta-llama/Llama-3.2-1B@4e20de3"}},
    }
    if h.emu.get(API, "basemodels", NS, "llama") is None:
        await h.apply(body, API, "basemodels")
    for node in nodes_ready:
        entry = {"name": "llama", "namespace": NS, "kind": "BaseModel", "status": "Ready"}
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": node,
                "namespace": "modelferry",
                "labels": {"app.kubernetes.io/component": "model-agent"},
            },
            "data": {f"{NS}.basemodel.llama": json.dumps(entry)},
        }
        await h.apply(cm, "v1", "configmaps")


def status(h: Harness) -> dict[str, Any]:
    return (h.emu.get(API, "modelservers", NS, NAME) or {}).get("status") or {}


def cond(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions", []) if c["type"] == kind), {})


def deployment(h: Harness) -> dict[str, Any] | None:
    return h.emu.get(APPS, "deployments", NS, NAME)


async def phase(h: Harness, want: str, **conditions: str) -> dict[str, Any]:
    """Wait for the phase and for each ``Type="Status/Reason"`` (or ``"Status"``) condition."""

    def done() -> dict[str, Any] | None:
        st = status(h)
        if st.get("phase") != want:
            return None
        for kind, expect in conditions.items():
            c = cond(st, kind)
            if f"{c.get('status')}/{c.get('reason')}" != expect and c.get("status") != expect:
                return None
        return st

    result: dict[str, Any] = await eventually(done)
    return result


async def set_deployment(h: Harness, ready: int, updated: int | None = None, **extra: Any) -> None:
    dep = deployment(h)
    assert dep is not None
    gen = dep["metadata"]["generation"]
    body = {"replicas": 1, "readyReplicas": ready, "updatedReplicas": ready if updated is None else updated}
    await h.emu.set_status(APPS, "deployments", NS, NAME, {**body, "observedGeneration": gen, **extra})


async def put_pod(h: Harness, suffix: str = "a", **status_: Any) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{NAME}-{suffix}", "namespace": NS, "labels": {"modelferry.io/modelserver": NAME}},
        "status": status_,
    }
    await h.emu.put_object("v1", "pods", pod)


def waiting(reason: str, restarts: int = 0, message: str = "", last: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "engine",
        "restartCount": restarts,
        "ready": False,
        "state": {"waiting": {"reason": reason, "message": message}},
        "lastState": last or {},
    }


async def test_node_cached_model_goes_loading_then_ready(harness: Harness) -> None:
    await put_basemodel(harness, ["node-a"])
    await harness.apply(modelserver(), API, "modelservers")
    await harness.start(**SETTINGS)
    st = await phase(harness, "Loading", ModelAvailable="True/ModelCached", Available="False")
    dep = deployment(harness)
    assert dep is not None and harness.emu.get("v1", "services", NS, NAME) is not None
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "ModelServer"
    assert st["url"] == f"http://{NAME}.{NS}.svc.cluster.local:8000/v1"
    assert st["modelRevision"] == "4e20de3"
    assert "Ready on 1 node" in cond(st, "ModelAvailable")["message"]
    await eventually(lambda: harness.events("DeploymentCreated"))
    await set_deployment(harness, ready=1)
    st = await phase(harness, "Ready", Available="True", Progressing="False/RolloutComplete", Degraded="False")
    assert st["readyReplicas"] == 1
    [event] = await eventually(lambda: harness.events("Ready"))
    assert event["type"] == "Normal" and st["url"] in event["message"]


async def test_a_model_no_node_holds_is_reported(harness: Harness) -> None:
    await put_basemodel(harness, [])
    await harness.apply(modelserver(), API, "modelservers")
    await harness.start(**SETTINGS)
    await eventually(lambda: deployment(harness))
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."}  # fmt: skip
    await put_pod(harness, phase="Pending", conditions=[unschedulable])
    st = await phase(harness, "Pending", ModelAvailable="False/NoNodeHoldsModel", Degraded="True/NoNodeHoldsModel")
    assert "no node holds BaseModel llama" in cond(st, "Degraded")["message"]
    [event] = await eventually(lambda: harness.events("NoNodeHoldsModel"))
    assert event["type"] == "Warning"
    # The agent caches it: the label-based affinity lets the pod schedule and the condition clears.
    await put_basemodel(harness, ["node-b"])
    await put_pod(harness, phase="Running", conditions=[{"type": "PodScheduled", "status": "True"}])
    await phase(harness, "Loading", ModelAvailable="True/ModelCached", Degraded="False/AsExpected")


async def test_a_crash_looping_engine_fails_then_degrades(harness: Harness) -> None:
    await put_basemodel(harness, ["node-a"])
    await harness.apply(modelserver(replicas=2), API, "modelservers")
    await harness.start(**SETTINGS)
    await eventually(lambda: deployment(harness))
    last = {"terminated": {"exitCode": 1, "reason": "Error", "message": "CUDA out of memory while loading"}}
    await put_pod(harness, "a", containerStatuses=[waiting("CrashLoopBackOff", restarts=5, last=last)])
    st = await phase(harness, "Failed", Degraded="True/CrashLoopBackOff", Available="False/CrashLoopBackOff")
    assert st["restarts"] == 5 and "CUDA out of memory" in st["message"]
    [event] = await eventually(lambda: harness.events("CrashLoopBackOff"))
    assert event["type"] == "Warning"
    await put_pod(
        harness, "b", containerStatuses=[{"name": "engine", "ready": True, "restartCount": 0, "state": {"running": {}}}]
    )
    await set_deployment(harness, ready=1)
    st = await phase(harness, "Degraded", Available="True", Degraded="True/CrashLoopBackOff")
    assert st["readyReplicas"] == 1 and st["selector"] == f"modelferry.io/modelserver={NAME}"


@pytest.mark.parametrize(
    ("container", "reason"),
    [
        (waiting("CrashLoopBackOff", 2, last={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}), "OOMKilled"),
        (waiting("ImagePullBackOff", message='Back-off pulling image "vllm/vllm-openai:nope"'), "ImagePullBackOff"),
        (waiting("CreateContainerConfigError", message='secret "hf-token" not found'), "CreateContainerConfigError"),
    ],
)
async def test_pod_failures_name_their_reason(harness: Harness, container: dict[str, Any], reason: str) -> None:
    await put_basemodel(harness, ["node-a"])
    await harness.apply(modelserver(), API, "modelservers")
    await harness.start(**SETTINGS)
    await eventually(lambda: deployment(harness))
    await put_pod(harness, containerStatuses=[container])
    st = await phase(harness, "Failed", Degraded=f"True/{reason}")
    assert cond(st, "Available")["reason"] == reason
    await eventually(lambda: harness.events(reason))


async def test_a_failing_model_download_is_reported(harness: Harness) -> None:
    await harness.apply(modelserver({"uri": "s3://models/llama", "secretRef": "creds"}), API, "modelservers")
    await harness.start(**SETTINGS)
    dep = await eventually(lambda: deployment(harness))
    assert dep["spec"]["template"]["spec"]["initContainers"][0]["name"] == "fetch-model"
    init = {"name": "fetch-model", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 3, "message": "NoSuchBucket: models"}}}  # fmt: skip
    await put_pod(harness, initContainerStatuses=[init])
    st = await phase(harness, "Failed", ModelAvailable="False/ModelDownloadFailed", Degraded="True/ModelDownloadFailed")
    assert "NoSuchBucket" in cond(st, "ModelAvailable")["message"]


async def test_a_spec_change_rolls_the_deployment_in_place(harness: Harness) -> None:
    await put_basemodel(harness, ["node-a"])
    await harness.apply(modelserver(), API, "modelservers")
    await harness.start(**SETTINGS)
    first = await eventually(lambda: deployment(harness))
    await set_deployment(harness, ready=1)
    await phase(harness, "Ready")
    changed = modelserver()
    changed["spec"]["engine"]["image"] = "docker.io/vllm/vllm-openai:v0.12.0"
    await harness.apply(changed, API, "modelservers")

    def rolled() -> dict[str, Any] | None:
        dep = deployment(harness)
        containers = dep["spec"]["template"]["spec"]["containers"] if dep else []
        return dep if containers and containers[0]["image"].endswith("v0.12.0") else None

    second = await eventually(rolled)
    assert second["metadata"]["uid"] == first["metadata"]["uid"]  # replaced in place, never deleted
    assert second["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    await eventually(lambda: harness.events("DeploymentUpdated"))
    await set_deployment(harness, ready=1, updated=0)
    await phase(harness, "Ready", Progressing="True/RollingOut")
    await set_deployment(harness, ready=1, updated=1)
    await phase(harness, "Ready", Progressing="False/RolloutComplete")


async def test_an_adapter_waits_for_its_training_run(harness: Harness) -> None:
    run = {"apiVersion": API, "kind": "TrainingRun", "metadata": {"name": "lora", "namespace": NS},
           "spec": {}, "status": {"phase": "Running"}}  # fmt: skip
    await harness.apply(run, API, "trainingruns")
    await put_basemodel(harness, ["node-a"])
    await harness.apply(modelserver(adapter={"trainingRun": "lora"}), API, "modelservers")
    await harness.start(**SETTINGS)
    await phase(harness, "Pending", ModelAvailable="False/AdapterNotReady")
    assert deployment(harness) is None
    run["status"] = {"phase": "Succeeded", "outputUri": "s3://runs/lora-1"}
    await harness.apply(run, API, "trainingruns")
    dep = await eventually(lambda: deployment(harness))
    init = dep["spec"]["template"]["spec"]["initContainers"]
    assert init[0]["command"] == ["modelferry", "sync", "s3://runs/lora-1/adapter", "/models/adapter"]
    assert "--enable-lora" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    await phase(harness, "Loading", ModelAvailable="True")


async def test_a_spec_that_cannot_work_fails_without_a_deployment(harness: Harness) -> None:
    await harness.apply(modelserver({"uri": "/var/lib/models"}), API, "modelservers")
    await harness.start(**SETTINGS)
    st = await phase(harness, "Failed", ModelAvailable="False/InvalidURI", Degraded="True/InvalidURI")
    assert "a pod cannot reach" in st["message"]
    assert deployment(harness) is None
    [event] = await eventually(lambda: harness.events("InvalidURI"))
    assert event["type"] == "Warning"


async def test_deleting_the_modelserver_removes_its_objects(harness: Harness) -> None:
    await put_basemodel(harness, ["node-a"])
    await harness.apply(modelserver(), API, "modelservers")
    await harness.start(**SETTINGS)
    await eventually(lambda: deployment(harness) and harness.emu.get("v1", "services", NS, NAME))
    await harness.emu.remove(API, "modelservers", NS, NAME)
    await eventually(lambda: deployment(harness) is None and harness.emu.get("v1", "services", NS, NAME) is None)


async def test_a_deployment_it_did_not_create_is_left_alone(harness: Harness) -> None:
    foreign = {"apiVersion": APPS, "kind": "Deployment", "metadata": {"name": NAME, "namespace": NS},
               "spec": {"replicas": 1, "template": {"spec": {"containers": []}}}}  # fmt: skip
    await harness.apply(foreign, APPS, "deployments")
    await put_basemodel(harness, ["node-a"])
    await harness.apply(modelserver(), API, "modelservers")
    await harness.start(**SETTINGS)
    [event] = await eventually(lambda: harness.events("NotManaged"))
    assert "was not created by modelferry" in event["message"]
    assert deployment(harness) == foreign | {"metadata": deployment(harness)["metadata"]}  # type: ignore[index]


async def test_objects_the_api_server_refuses_fail_the_modelserver(harness: Harness) -> None:
    harness.emu.invalid["deployments"] = (
        'Deployment.apps "chat" is invalid: spec.template.spec.containers[0].image: Required'
    )
    await put_basemodel(harness, ["node-a"])
    await harness.apply(modelserver(), API, "modelservers")
    await harness.start(**SETTINGS)
    st = await phase(harness, "Failed", Degraded="True/Rejected")
    assert "containers[0].image: Required" in st["message"] and deployment(harness) is None
    # fixed (here: admission lets it through): the next change of the ModelServer creates it
    del harness.emu.invalid["deployments"]
    await harness.apply(modelserver(replicas=2), API, "modelservers")
    await phase(harness, "Loading")


async def test_a_rollout_past_its_deadline_is_reported(harness: Harness) -> None:
    await put_basemodel(harness, ["node-a"])
    await harness.apply(modelserver(), API, "modelservers")
    await harness.start(**SETTINGS)
    await eventually(lambda: deployment(harness))
    stuck = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": 'ReplicaSet "chat-5d8f" has timed out progressing.'}  # fmt: skip
    await set_deployment(harness, ready=1, updated=0, conditions=[stuck])
    st = await phase(harness, "Ready", Progressing="False/ProgressDeadlineExceeded", Available="True")
    assert "timed out progressing" in cond(st, "Progressing")["message"]
