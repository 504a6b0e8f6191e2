"""Tenant attacks on what the controller renders: $(VAR) expansion, spec.job, Job names, Secret values."""

from __future__ import annotations

import base64
import io
import logging
from typing import Any

import pytest

from modelferry.controller.config.controller import ControllerSettings, JobPolicySettings
from modelferry.controller.sync.modelsync import job_name, plan_modelsync_job
from modelferry.controller.sync.modelsync_status import job_status
from modelferry.controller.sync.secretmode import plan_secret_job
from modelferry.controller.training.render import RenderContext, render, workload_name
from modelferry.logs import setup_logging
from tests.kube_expansion import expand, expanded_container

TOKEN = "hf_TenantBTokenThatMustNeverLeak0123456789"
REF = "$(MODELFERRY_SOURCE__HF__TOKEN)"
SETTINGS = ControllerSettings()


def modelsync(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "modelferry.io/v1alpha1", "kind": "ModelSync",
            "metadata": {"name": "m", "namespace": "demo", "uid": "u"}, "spec": spec}  # fmt: skip


def secret(name: str, **values: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "demo"}, "stringData": values}


def sync_container(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"]["containers"][0])


def test_expansion_helper_follows_kubernetes_rules() -> None:
    env = {"A": "x"}
    assert expand("$(A)-$$(A)-$(B)-$$-$x-$(", env) == "x-$(A)-$(B)-$-$x-$("


def test_token_reference_in_modelsync_fields_is_never_expanded() -> None:
    """A ModelSync that names its own token in every string field: the process sees the strings, never the token."""
    spec = {
        "source": {"uri": f"s3://src/p-{REF}", "revision": REF, "credentialsSecret": "hf",
                   "include": [f"*{REF}*"], "exclude": [f"$${REF}"]},
        "target": {"dataConnection": "dc", "path": f"models/{REF}"},
    }  # fmt: skip
    secrets = {
        "hf": secret("hf", HF_TOKEN=TOKEN),
        "dc": secret("dc", AWS_S3_BUCKET="bucket", AWS_ACCESS_KEY_ID="AKIA", AWS_SECRET_ACCESS_KEY="secretvalue"),
    }
    plan = plan_modelsync_job(modelsync(**spec), secrets, SETTINGS)
    assert plan.job is not None, plan.error
    seen = expanded_container(sync_container(plan.job), {n: s["stringData"] for n, s in secrets.items()})
    assert seen["env"]["MODELFERRY_SOURCE__HF__TOKEN"] == TOKEN  # by reference, as it must be
    assert not any(TOKEN in a for a in seen["args"] + seen["command"]), seen["args"]
    args = seen["args"]
    assert args[1] == f"s3://src/p-{REF}"
    assert args[2] == f"s3://bucket/models/{REF}/"  # the data connection's bucket is still filled in
    assert args[args.index("--revision") + 1] == REF
    assert args[args.index("--include") + 1] == f"*{REF}*"
    assert args[args.index("--exclude") + 1] == f"$${REF}"


def test_token_reference_in_trainingrun_fields_is_never_expanded() -> None:
    """TrainingRun strings (trainer command/args/env, URIs, MLflow) reach both containers literally."""
    spec = {
        "baseModel": {"uri": f"s3://bkt/base-{REF}"},
        "dataset": {"uri": f"s3://bkt/data-{REF}", "secretRef": "data"},
        "output": {"uri": f"s3://bkt/out-{REF}"},
        "mlflow": {"trackingUri": f"http://mlflow/{REF}", "experiment": REF, "secretRef": "ml"},
        "trainer": {"image": "trainer:1", "command": ["python", REF], "args": [f"--x={REF}"],
                    "env": [{"name": "LEAK", "value": "$(MLFLOW_TRACKING_TOKEN)"}]},
        "hyperparameters": {"note": "$(MODELFERRY_SIDECAR_SOURCE__S3__SECRET_ACCESS_KEY)"},
    }  # fmt: skip
    tr = {"apiVersion": "modelferry.io/v1alpha1", "kind": "TrainingRun",
          "metadata": {"name": "t", "namespace": "demo", "uid": "u"}, "spec": spec}  # fmt: skip
    secrets = {"data": {"AWS_SECRET_ACCESS_KEY": TOKEN}, "ml": {"MLFLOW_TRACKING_TOKEN": TOKEN}}
    for workers, kind in ((1, "Job"), (2, "Job"), (2, "PyTorchJob"), (2, "TrainJob")):
        spec["distributed"] = {"workers": workers}
        ctx = RenderContext(has_pytorchjob=kind == "PyTorchJob", has_trainjob=kind == "TrainJob")
        result = render(tr, ctx)
        assert result.problem is None, result.problem
        assert result.kind == kind
        workload = result.objects[0]
        if kind == "PyTorchJob":
            pods = [r["template"]["spec"] for r in workload["spec"]["pytorchReplicaSpecs"].values()]
        elif kind == "TrainJob":
            runtime = result.objects[1]["spec"]["template"]["spec"]["replicatedJobs"]
            pods = [r["template"]["spec"]["template"]["spec"] for r in runtime]
        else:
            pods = [workload["spec"]["template"]["spec"]]
        for pod in pods:
            for container in pod["containers"]:
                seen = expanded_container(container, secrets)
                values = [v for k, v in seen["env"].items() if k not in ("MLFLOW_TRACKING_TOKEN",) and
                          "SECRET_ACCESS_KEY" not in k]  # fmt: skip
                assert not any(TOKEN in s for s in values + seen["command"] + seen["args"]), container["name"]
        trainer = expanded_container(pods[0]["containers"][0], secrets)
        assert trainer["command"][-3:] == ["python", REF, f"--x={REF}"]
        assert trainer["env"]["LEAK"] == "$(MLFLOW_TRACKING_TOKEN)"


def test_secret_mode_values_reach_the_job_literally() -> None:
    """Secret-mode values (by reference, or copied into args like the noop reason) are never expanded."""
    path = "s3://src-bucket/$(MODELFERRY_SOURCE__S3__SECRET_ACCESS_KEY)/"
    src = secret("model-source", S3_SYNC_SRC__PATH=path, S3_SYNC_SRC__SECRET_KEY=TOKEN, S3_SYNC_SRC__ACCESS_KEY="AKIA")
    target_secret = secret("demo-models", AWS_S3_BUCKET="dst-bucket", AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s")
    plan = plan_secret_job(src, target_secret, SETTINGS)
    assert plan.job is not None, plan.error
    values = {"model-source": src["stringData"], "demo-models": target_secret["stringData"]}
    seen = expanded_container(sync_container(plan.job), values)
    assert seen["args"][1] == path and not any(TOKEN in a for a in seen["args"])
    noop = plan_secret_job(secret("model-source", S3_SYNC_LOCAL_UPLOAD_COMPLETE="true", S3_SYNC_DATA_CONNECTION=REF),
                           None, SETTINGS).job  # fmt: skip
    assert noop is not None
    assert REF in expanded_container(sync_container(noop), {})["args"][2]


def test_failure_record_quoting_a_credential_is_scrubbed_from_status() -> None:
    """The sync pod's failure record quotes a credential: status.message and conditions never show it."""
    secrets = {"s3": secret("s3", AWS_ACCESS_KEY_ID="AKIAEXAMPLEKEYID", AWS_SECRET_ACCESS_KEY="plainSecretValue42")}
    obj = modelsync(source={"uri": "s3://src/p", "credentialsSecret": "s3"}, target={"uri": "s3://dst/q"})
    plan = plan_modelsync_job(obj, secrets, SETTINGS)
    assert plan.job is not None
    record = {"status": "failed", "reason": "AccessDenied", "exit_code": 3,
              "message": "s3://src/p: access denied for key plainSecretValue42 (token=abc123xyz)"}  # fmt: skip
    import json

    pod = {"status": {"containerStatuses": [{"state": {"terminated": {"message": json.dumps(record)}}}]}}
    job = {"metadata": {"name": "modelsync-m"}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    status = job_status(obj, job, [pod], "2026-01-01T00:00:00Z")
    text = json.dumps(status)
    assert "plainSecretValue42" not in text and "abc123xyz" not in text
    assert "access denied for key ***" in status["message"]


@pytest.mark.parametrize(
    ("job", "policy", "reason"),
    [
        ({"image": "evil.example.com/steal:1"}, {}, "JobPolicyAllowedImages"),
        ({"serviceAccountName": "builder"}, {}, "JobPolicyAllowServiceAccountName"),
        (
            {"tolerations": [{"operator": "Exists"}]},
            {"allowed_toleration_keys": ["gpu"]},
            "JobPolicyAllowedTolerationKeys",
        ),
        ({"tolerations": [{"key": "node-role.kubernetes.io/control-plane"}]}, {}, "JobPolicyAllowedTolerationKeys"),
        ({"nodeSelector": {"kubernetes.io/hostname": "etcd-0"}}, {}, "JobPolicyAllowedNodeSelectorKeys"),
    ],
)
def test_tenant_cannot_choose_job_image_identity_or_nodes(
    job: dict[str, Any], policy: dict[str, Any], reason: str
) -> None:
    obj = modelsync(source={"uri": "hf://org/repo"}, target={"uri": "s3://dst/q"}, job=job)
    plan = plan_modelsync_job(obj, {}, ControllerSettings(job_policy=JobPolicySettings(**policy)))
    assert plan.job is None and plan.error is not None
    assert plan.error.reason == reason
    setting = reason.removeprefix("JobPolicy")
    env = (
        "MODELFERRY_CONTROLLER__JOB_POLICY__"
        + "".join("_" + c if c.isupper() and i else c for i, c in enumerate(setting)).upper()
    )
    assert env in plan.error.message


def test_job_policy_allows_what_the_admin_lists() -> None:
    policy = JobPolicySettings(
        allowed_images=["registry.example.com/modelferry/*"],
        allow_service_account_name=True,
        allowed_toleration_keys=["gpu"],
        allowed_node_selector_keys=["pool"],
    )
    job = {"image": "registry.example.com/modelferry/sync:2", "serviceAccountName": "irsa",
           "tolerations": [{"key": "gpu", "operator": "Exists"}], "nodeSelector": {"pool": "io"}}  # fmt: skip
    obj = modelsync(source={"uri": "hf://org/repo"}, target={"uri": "s3://dst/q"}, job=job)
    plan = plan_modelsync_job(obj, {}, ControllerSettings(job_policy=policy))
    assert plan.job is not None
    pod = plan.job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "irsa" and pod["containers"][0]["image"] == job["image"]


def test_sync_and_secret_mode_pods_get_no_api_token() -> None:
    obj = modelsync(source={"uri": "hf://org/repo"}, target={"uri": "s3://dst/q"})
    plan = plan_modelsync_job(obj, {}, SETTINGS)
    assert plan.job is not None and plan.job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    src = secret("model-source", S3_SYNC_LOCAL_UPLOAD_COMPLETE="true")
    noop = plan_secret_job(src, None, SETTINGS).job
    assert noop is not None and noop["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_long_modelsync_names_never_share_a_job() -> None:
    """Two ModelSyncs whose names differ after character 53 would replace each other's Job."""
    stem = "granite-3.1-8b-instruct-quantized-w4a16-for-the-research-team"
    a, b = job_name(stem + "-a"), job_name(stem + "-b")
    assert a != b
    assert len(a) <= 63 and len(b) <= 63
    assert job_name("short") == "modelsync-short"
    assert workload_name(stem + "-a") != workload_name(stem + "-b")  # TrainingRun workloads too
    assert len(workload_name(stem + "-a")) <= 63 and workload_name("short") == "short-train"


def test_binary_model_source_value_is_named_in_the_event() -> None:
    """A non-UTF-8 S3_SYNC_SRC__PATH used to read as unset: the Event blamed a missing key instead."""
    src = {"metadata": {"name": "model-source", "namespace": "demo"},
           "data": {"S3_SYNC_SRC__PATH": base64.b64encode(b"s3://b/\xff\xfe").decode()}}  # fmt: skip
    target_secret = secret("demo-models", AWS_S3_BUCKET="b", AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s")
    plan = plan_secret_job(src, target_secret, SETTINGS)
    assert plan.error is not None
    assert plan.error.reason == "SecretValueNotText"
    assert "S3_SYNC_SRC__PATH" in plan.error.message and "UTF-8" in plan.error.message


@pytest.mark.parametrize(
    ("transfer", "field"), [({"concurrency": 100000}, "concurrency"), ({"partSize": "4KiB"}, "part_size")]
)
def test_transfer_tuning_beyond_engine_limits_never_makes_a_failing_job(transfer: dict[str, Any], field: str) -> None:
    obj = modelsync(source={"uri": "hf://org/repo"}, target={"uri": "s3://dst/q"}, transfer=transfer)
    plan = plan_modelsync_job(obj, {}, SETTINGS)
    assert plan.job is None and plan.error is not None
    assert plan.error.reason == "InvalidTransfer" and field in plan.error.message


def test_hub_requests_are_not_logged_at_info() -> None:
    """huggingface_hub 2.x logs every request through the ``httpx2`` logger at INFO (URLs, repo names)."""
    stream = io.StringIO()
    setup_logging("info", "text", stream)
    logging.getLogger("httpx2").info("HTTP Request: GET https://huggingface.co/api/models/org/private-repo")
    logging.getLogger("httpcore2.http11").info("send_request_headers.started")
    logging.getLogger("modelferry.test").info("kept")
    assert "private-repo" not in stream.getvalue() and "send_request" not in stream.getvalue()
    assert "kept" in stream.getvalue()


def test_crd_concurrency_maximum_is_the_engine_maximum() -> None:
    """The API server refuses what the engine would refuse (the CRD and TransferSettings never drift)."""
    from pathlib import Path

    import yaml
    from annotated_types import Le

    from modelferry.settings import TransferSettings

    crd = yaml.safe_load((Path(__file__).resolve().parents[2] / "manifests" / "crds" / "modelsync.yaml").read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    engine_max = next(m.le for m in TransferSettings.model_fields["concurrency"].metadata if isinstance(m, Le))
    assert props["transfer"]["properties"]["concurrency"]["maximum"] == engine_max


def test_one_tenants_secret_values_never_mask_another_tenants_status() -> None:
    """A tenant whose "token" is a common word must not blank out words in other namespaces' statuses."""
    from modelferry.controller.kube.events import event_body

    evil = {"metadata": {"name": "creds", "namespace": "evil"}, "stringData": {"HF_TOKEN": "synchronized"}}
    obj = modelsync(source={"uri": "hf://org/repo", "credentialsSecret": "creds"}, target={"uri": "s3://dst/q"})
    obj["metadata"]["namespace"] = "evil"
    assert plan_modelsync_job(obj, {"creds": evil}, SETTINGS).job is not None
    job = {"metadata": {"name": "modelsync-m"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    other = modelsync()
    assert job_status(other, job, [], "now")["message"] == "the model is synchronized"
    assert event_body(other, "Normal", "SyncSucceeded", "synchronized", "c", "now")["message"] == "synchronized"
    assert event_body(obj, "Normal", "SyncSucceeded", "synchronized", "c", "now")["message"] == "***"
