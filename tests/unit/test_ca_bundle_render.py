"""Pods rendered by the controller (and the agent's DaemonSet) mount the trusted CA ConfigMap."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelferry.controller.config.controller import ControllerSettings, JobSettings
from modelferry.controller.sync.modelsync import plan_modelsync_job
from modelferry.controller.sync.secretmode import plan_secret_job
from modelferry.controller.training import RenderContext, render
from modelferry.controller.workload.cabundle import CA_ROOT, INJECT_LABEL, ODH_CONFIGMAP, ca_source
from modelferry.tls import resolve_tls
from tests.servers.tlsca import make_private_ca
from tests.unit.test_training_render import TR

ROOT = Path(__file__).resolve().parents[2]


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "demo", "uid": "u"},
        "data": encoded,
    }


TARGET = secret("demo-models", {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s", "AWS_S3_BUCKET": "dest-bucket"})
SOURCE = secret("model-source", {"S3_SYNC_SRC__PATH": "s3://bucket/folder/", "S3_SYNC_SRC__ACCESS_KEY": "k",
                                 "S3_SYNC_SRC__SECRET_KEY": "x"})  # fmt: skip


def modelsync(**job: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelferry.io/v1alpha1",
        "kind": "ModelSync",
        "metadata": {"name": "m", "namespace": "demo", "uid": "u"},
        "spec": {"source": {"uri": "s3://src/llama"}, "target": {"uri": "s3://dst/llama"}, "job": job},
    }


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def ca_volume(pod: dict[str, Any]) -> dict[str, Any]:
    [volume] = [v for v in pod["volumes"] if v["name"] == "trusted-ca"]
    return volume


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_modelsync_job_mounts_openshift_ai_bundle_by_default() -> None:
    plan = plan_modelsync_job(modelsync(), {}, ControllerSettings())
    assert plan.job is not None
    pod = pod_of(plan.job)
    volume = ca_volume(pod)
    assert volume["configMap"] == {
        "name": ODH_CONFIGMAP,
        "items": [
            {"key": "ca-bundle.crt", "path": "ca-bundle.crt"},
            {"key": "odh-ca-bundle.crt", "path": "odh-ca-bundle.crt"},
        ],
        "optional": True,  # a namespace without it still runs the Job
    }
    [container] = pod["containers"]
    assert {"name": "trusted-ca", "mountPath": f"{CA_ROOT}/platform", "readOnly": True} in container["volumeMounts"]
    assert env_of(container)["MODELFERRY_TLS__CLUSTER_BUNDLE"] == f"{CA_ROOT}/platform"


def test_a_named_configmap_is_required_and_becomes_the_ca_bundle() -> None:
    settings = ControllerSettings(job=JobSettings(ca_configmap="corp-ca", ca_configmap_keys=["root.pem", "inter.pem"]))
    plan = plan_secret_job(SOURCE, TARGET, settings)
    assert plan.job is not None
    pod = pod_of(plan.job)
    volume = ca_volume(pod)
    assert volume["configMap"]["name"] == "corp-ca" and volume["configMap"]["optional"] is False
    assert [i["key"] for i in volume["configMap"]["items"]] == ["root.pem", "inter.pem"]
    env = env_of(pod["containers"][0])
    assert env["MODELFERRY_TLS__CA_BUNDLE"] == f"{CA_ROOT}/named"
    assert "MODELFERRY_TLS__CLUSTER_BUNDLE" not in env


def test_modelsync_names_its_own_configmap_and_a_hostile_name_is_refused() -> None:
    plan = plan_modelsync_job(modelsync(caConfigMap="team-ca"), {}, ControllerSettings())
    assert plan.job is not None
    assert ca_volume(pod_of(plan.job))["configMap"]["name"] == "team-ca"
    for bad in ("$(HOME)", "../etc", "Team CA", 7):
        refused = plan_modelsync_job(modelsync(caConfigMap=bad), {}, ControllerSettings())
        assert refused.job is None and refused.error is not None
        assert refused.error.reason == "InvalidCAConfigMap" and "spec.job.caConfigMap" in refused.error.message


def test_platform_bundle_can_be_turned_off() -> None:
    plan = plan_modelsync_job(modelsync(), {}, ControllerSettings(job=JobSettings(platform_ca=False)))
    assert plan.job is not None
    assert all(v["name"] != "trusted-ca" for v in pod_of(plan.job)["volumes"])


def test_trainingrun_sidecar_and_trainer_each_mount_the_ca_once() -> None:
    ctx = RenderContext(ca=ca_source("corp-ca", ("ca-bundle.crt",), platform=True))
    [job, *_] = render(TR, ctx).objects
    pod = pod_of(job)
    assert ca_volume(pod)["configMap"]["name"] == "corp-ca"
    for container in pod["containers"]:
        mounts = [m for m in container["volumeMounts"] if m["name"] == "trusted-ca"]
        assert mounts == [{"name": "trusted-ca", "mountPath": f"{CA_ROOT}/named", "readOnly": True}]
        assert env_of(container)["MODELFERRY_TLS__CA_BUNDLE"] == f"{CA_ROOT}/named"


def test_agent_daemonset_mounts_the_injected_configmap() -> None:
    docs = [d for p in (ROOT / "manifests" / "agent").glob("*.yaml") for d in yaml.safe_load_all(p.read_text()) if d]
    [cm] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "modelferry-trusted-ca-bundle"]
    assert cm["metadata"]["labels"][INJECT_LABEL] == "true"
    [ds] = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert ca_volume(pod)["configMap"]["name"] == "modelferry-trusted-ca-bundle"
    [agent] = pod["containers"]
    path = env_of(agent)["MODELFERRY_TLS__CLUSTER_BUNDLE"]
    assert {"name": "trusted-ca", "mountPath": path, "readOnly": True} in agent["volumeMounts"]


def test_the_mounted_directory_is_what_the_pod_trusts(tmp_path: Path) -> None:
    """What the rendered variables do: a filled mount is trusted; an empty optional one changes nothing."""
    mount = tmp_path / "platform"
    mount.mkdir()
    env = {"MODELFERRY_TLS__CLUSTER_BUNDLE": str(mount)}
    assert resolve_tls(environ=env).ca is None  # the namespace has no such ConfigMap
    (mount / "..data").mkdir()  # kubelet's layout: keys are links into ..data
    (mount / "..data" / "ca-bundle.crt").write_bytes(make_private_ca(tmp_path / "ca").ca_file.read_bytes())
    (mount / "ca-bundle.crt").symlink_to(mount / "..data" / "ca-bundle.crt")
    tls = resolve_tls(environ=env)
    assert tls.ca == str(mount) and "CA ConfigMap" in tls.describe()
    assert len(tls.ssl_context().get_ca_certs()) == 1
    other = tmp_path / "explicit.pem"
    other.write_bytes((mount / "ca-bundle.crt").read_bytes())
    assert resolve_tls(environ={**env, "SSL_CERT_FILE": str(other)}).ca == str(other)  # more specific wins


@pytest.mark.parametrize("keys", [["../x"], [".."], ["a/b"]])
def test_bad_configmap_keys_are_refused(keys: list[str]) -> None:
    from modelferry.controller.workload.cabundle import invalid_ca_reference

    assert invalid_ca_reference("ok", keys) is not None
