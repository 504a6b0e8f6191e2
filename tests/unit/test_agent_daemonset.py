"""The agent DaemonSet rendered from a NodeAgent: the default equals the plain manifest; bad specs are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from modelferry.controller.agent.daemonset import (
    KIND,
    Problem,
    agent_status,
    daemonset_name,
    inputs_hash,
    render_daemonset,
)
from modelferry.controller.config.controller import ControllerSettings
from modelferry.controller.kube.ownership import owned_by

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ControllerSettings().job.image  # a NodeAgent without an image runs the controller's own


def agent(spec: dict[str, Any] | None = None, name: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "modelferry.io/v1alpha1",
        "kind": "NodeAgent",
        "metadata": {"name": name, "uid": "u-1", "generation": 1},
        "spec": spec or {},
    }


def render(spec: dict[str, Any] | None = None, name: str = "default") -> dict[str, Any]:
    out = render_daemonset(agent(spec, name), namespace="modelferry", default_image=IMAGE)
    assert not isinstance(out, Problem), out
    return out


def nodeagent_schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "manifests" / "crds" / "nodeagent.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_default_nodeagent_renders_the_plain_manifest() -> None:
    plain = yaml.safe_load((ROOT / "manifests" / "agent" / "daemonset.yaml").read_text())
    ours = render()
    assert ours["apiVersion"] == plain["apiVersion"] and ours["kind"] == plain["kind"]
    assert ours["metadata"]["name"] == plain["metadata"]["name"]
    assert ours["metadata"]["namespace"] == plain["metadata"]["namespace"]
    assert plain["metadata"]["labels"].items() <= ours["metadata"]["labels"].items()
    assert ours["spec"] == plain["spec"]


def test_default_image_is_the_release_image() -> None:
    from modelferry import __version__

    assert f"quay.io/modelferry/modelferry:{__version__}" == IMAGE


def test_owner_reference_labels_and_hash() -> None:
    ds = render(name="gpu-pool")
    assert ds["metadata"]["name"] == "modelferry-agent-gpu-pool" == daemonset_name("gpu-pool")
    (ref,) = ds["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "modelferry.io/v1alpha1",
        "kind": "NodeAgent",
        "name": "gpu-pool",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert owned_by(ds, KIND, "gpu-pool") and not owned_by(ds, KIND, "default")
    assert inputs_hash(ds) == inputs_hash(render(name="gpu-pool"))
    assert inputs_hash(ds) != inputs_hash(render({"workers": 4}, name="gpu-pool"))


def test_every_field_reaches_the_pod() -> None:
    spec = {
        "image": "registry.example/mf:1.2",
        "imagePullPolicy": "Always",
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "modelsRoot": "/var/lib/models/",
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
        "workers": 6,
        "highWatermark": 0.75,
        "watchOme": True,
        "logFormat": "text",
        "priorityClassName": "high",
        "maxUnavailable": "10%",
    }
    jsonschema.validate(agent(spec), nodeagent_schema())
    ds = render(spec)
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert c["image"] == "registry.example/mf:1.2" and c["imagePullPolicy"] == "Always"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == spec["tolerations"] and pod["priorityClassName"] == "high"
    assert env["MODELFERRY_AGENT__MODELS_ROOT"] == "/var/lib/models"
    assert env["MODELFERRY_AGENT__WORKERS"] == "6" and env["MODELFERRY_AGENT__HIGH_WATERMARK"] == "0.75"
    assert env["MODELFERRY_AGENT__WATCH_OME"] == "true" and env["MODELFERRY_LOG_FORMAT"] == "text"
    assert c["resources"] == spec["resources"]
    assert pod["volumes"][0]["hostPath"]["path"] == "/var/lib/models"
    assert c["volumeMounts"][0]["mountPath"] == "/var/lib/models"
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "10%"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"modelsRoot": "relative/dir"}, "spec.modelsRoot"),
        ({"modelsRoot": "/mnt/../etc"}, "spec.modelsRoot"),
        ({"modelsRoot": "/"}, "spec.modelsRoot"),
        ({"modelsRoot": "/mnt/$(HOME)"}, "spec.modelsRoot"),
        ({"image": "quay.io/x:1 --privileged"}, "spec.image"),
        ({"image": "$(EVIL)"}, "spec.image"),
        ({"workers": 0}, "spec.workers"),
        ({"workers": True}, "spec.workers"),
        ({"highWatermark": 1.5}, "spec.highWatermark"),
        ({"nodeSelector": {"zone": 1}}, "spec.nodeSelector"),
        ({"tolerations": [{"operator": "Exists", "hostPath": "/"}]}, "spec.tolerations[0]"),
        ({"tolerations": [{"operator": "Maybe"}]}, "spec.tolerations[0].operator"),
        ({"resources": {"requests": {"cpu": "lots"}}}, "spec.resources.requests.cpu"),
        ({"resources": {"claims": []}}, "spec.resources"),
        ({"maxUnavailable": "200%"}, "spec.maxUnavailable"),
        ({"logFormat": "xml"}, "spec.logFormat"),
        ({"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy"),
    ],
)
def test_bad_specs_are_refused_with_the_field_named(spec: dict[str, Any], field: str) -> None:
    out = render_daemonset(agent(spec), namespace="modelferry", default_image=IMAGE)
    assert isinstance(out, Problem), out
    assert out.reason == "InvalidSpec" and out.message.startswith(field + " ")
    assert "not valid" in out.message


@pytest.mark.parametrize(
    "spec",
    [
        {"modelsRoot": "relative"},
        {"image": "a b"},
        {"workers": 0},
        {"highWatermark": 0},
        {"tolerations": [{"operator": "Maybe"}]},
        {"logFormat": "xml"},
    ],
)
def test_the_crd_schema_refuses_them_too(spec: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(agent(spec), nodeagent_schema())


def ds_with(desired: int, ready: int, updated: int, observed: int | None = 1) -> dict[str, Any]:
    status: dict[str, Any] = {
        "desiredNumberScheduled": desired,
        "numberReady": ready,
        "updatedNumberScheduled": updated,
    }
    if observed is not None:
        status["observedGeneration"] = observed
    return {"metadata": {"generation": 1}, "status": status}


@pytest.mark.parametrize(
    ("ds", "ready", "reason"),
    [
        (None, "False", "DaemonSetPending"),
        (ds_with(0, 0, 0, observed=None), "False", "RolloutPending"),
        (ds_with(0, 0, 0), "False", "NoMatchingNodes"),
        (ds_with(3, 2, 3), "False", "RollingOut"),
        (ds_with(3, 3, 2), "False", "RollingOut"),
        (ds_with(3, 3, 3), "True", "AllNodesReady"),
    ],
)
def test_status_from_the_daemonset(ds: dict[str, Any] | None, ready: str, reason: str) -> None:
    status = agent_status(agent(), ds, None, "modelferry", "2026-01-01T00:00:00Z")
    (cond,) = status["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Ready", ready, reason)
    assert status["daemonSet"] == "modelferry/modelferry-agent" and status["observedGeneration"] == 1
    if ds is not None:
        assert status["desiredNodes"] == ds["status"]["desiredNumberScheduled"]
        assert status["readyNodes"] == ds["status"]["numberReady"]


def test_unchanged_condition_keeps_its_transition_time() -> None:
    first = agent_status(agent(), ds_with(2, 1, 2), None, "modelferry", "2026-01-01T00:00:00Z")
    old = {**agent(), "status": first}
    again = agent_status(old, ds_with(2, 1, 2), None, "modelferry", "2026-02-02T00:00:00Z")
    assert again["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    done = agent_status(old, ds_with(2, 2, 2), None, "modelferry", "2026-02-02T00:00:00Z")
    assert done["conditions"][0]["lastTransitionTime"] == "2026-02-02T00:00:00Z"


def test_problem_becomes_ready_false() -> None:
    problem = Problem("InvalidSpec", "spec.workers 0 is not valid: use a whole number from 1 to 64")
    status = agent_status(agent(), None, problem, "modelferry", "2026-01-01T00:00:00Z")
    assert status["conditions"][0]["reason"] == "InvalidSpec"
    assert "spec.workers" in status["conditions"][0]["message"]
