"""ModelSync decisions, status, the work queue and Lease decisions (pure)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from modelferry.controller.config.controller import ControllerSettings, JobPolicySettings
from modelferry.controller.reconcile.workqueue import WorkQueue
from modelferry.controller.sync.modelsync import job_name, plan_modelsync_job, referenced_secrets
from modelferry.controller.sync.modelsync_status import error_status, job_status, termination_summary
from modelferry.controller.sync.secretmode import Finding

SETTINGS = ControllerSettings()


def ms(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "modelferry.io/v1alpha1", "kind": "ModelSync",
            "metadata": {"name": "m", "namespace": "demo", "uid": "u", "generation": 2}, "spec": spec}  # fmt: skip


def sec(name: str, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "stringData": data}


def test_target_uri_with_credentials_and_globs() -> None:
    obj = ms(source={"uri": "s3://src-bucket/p", "credentialsSecret": "src", "include": ["*.json"], "exclude": ["x/*"]},
             target={"uri": "s3://dst-bucket/q", "credentialsSecret": "dst"}, job={"image": "img:1", "backoffLimit": 1})  # fmt: skip
    secrets = {
        "src": sec("src", AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s"),
        "dst": sec("dst", AWS_S3_ENDPOINT="e"),
    }
    assert referenced_secrets(obj) == ["src", "dst"]
    allowing = ControllerSettings(job_policy=JobPolicySettings(allowed_images=["img:*"]))
    plan = plan_modelsync_job(obj, secrets, allowing)
    assert plan.job is not None
    container = plan.job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "sync",
        "s3://src-bucket/p",
        "s3://dst-bucket/q",
        "--json",
        "--include",
        "*.json",
        "--exclude",
        "x/*",
    ]
    assert container["image"] == "img:1" and plan.job["spec"]["backoffLimit"] == 1
    names = {e["name"] for e in container["env"]}
    assert {"MODELFERRY_SOURCE__S3__ACCESS_KEY_ID", "MODELFERRY_TARGET__S3__ENDPOINT_URL"} <= names
    assert '"s"' not in json.dumps(plan.job)
    assert plan.job["metadata"]["name"] == job_name("m")


def test_secret_change_changes_hash() -> None:
    obj = ms(source={"uri": "hf://a/b", "credentialsSecret": "t"}, target={"uri": "s3://dst-bucket/q"})
    one = plan_modelsync_job(obj, {"t": sec("t", HF_TOKEN="1")}, SETTINGS).job
    two = plan_modelsync_job(obj, {"t": sec("t", HF_TOKEN="2")}, SETTINGS).job
    assert one and two
    assert one["metadata"]["annotations"] != two["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"source": {"uri": "ftp://x"}, "target": {"uri": "s3://dst-bucket/q"}}, "InvalidSourceURI"),
        ({"source": {"uri": "hf://a/b"}, "target": {"uri": "hf://c/d"}}, "InvalidTargetURI"),
        ({"source": {"uri": "hf://a/b"}, "target": {}}, "TargetNotConfigured"),
        ({"source": {"uri": "hf://a/b"}, "target": {"dataConnection": "dc"}}, "DataConnectionNotFound"),
        (
            {"source": {"uri": "hf://a/b"}, "target": {"uri": "s3://dst-bucket/q"}, "transfer": {"partSize": "lots"}},
            "InvalidTransfer",
        ),
    ],
)
def test_bad_specs(spec: dict[str, Any], reason: str) -> None:
    plan = plan_modelsync_job(ms(**spec), {"dc": None}, SETTINGS)
    assert plan.job is None and plan.error is not None and plan.error.reason == reason


def test_error_status_is_ready_false() -> None:
    status = error_status(ms(), Finding("InvalidSourceURI", "fix it"), "2026-01-01T00:00:00Z")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready == {"type": "Ready", "status": "False", "reason": "InvalidSourceURI", "message": "fix it",
                     "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
    assert status["observedGeneration"] == 2


def test_status_keeps_transition_time_while_unchanged() -> None:
    job = {"metadata": {"name": "j"}, "status": {"active": 1}}
    first = job_status(ms(), job, [], "T1")
    again = job_status({**ms(), "status": first}, job, [], "T2")
    assert again["conditions"] == first["conditions"]


def test_termination_summary_picks_newest_json() -> None:
    def pod(msg: str, at: str) -> dict[str, Any]:
        return {"status": {"containerStatuses": [{"state": {"terminated": {"message": msg, "finishedAt": at}}}]}}

    pods = [pod('{"status":"failed"}', "2026-01-01T00:00:01Z"), pod('{"status":"complete"}', "2026-01-01T00:00:09Z"),
            pod("not json", "2026-01-01T00:00:10Z")]  # fmt: skip
    assert termination_summary(pods) == {"status": "complete"}
    assert termination_summary([]) is None


async def test_work_queue_serialises_and_backs_off() -> None:
    queue = WorkQueue(backoff_base=0.01, backoff_max=0.04)
    queue.add("a")
    queue.add("a")
    assert len(queue) == 1
    key = await queue.get()
    queue.add("a")  # changed while processing: handed out again only after done()
    assert len(queue) == 1
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.done(key)
    assert await asyncio.wait_for(getter, 1) == "a"
    assert [queue.retry("a") for _ in range(4)] == [0.01, 0.02, 0.04, 0.04]
    queue.forget("a")
    assert queue.retry("a") == 0.01
    queue.close()
    with pytest.raises(asyncio.CancelledError):
        await queue.get()


def test_pvc_source_is_mounted_read_only_and_pvc_target_read_write() -> None:
    plan = plan_modelsync_job(ms(source={"uri": "pvc://cache/llama"}, target={"uri": "pvc://demo:serving/llama"}), {},
                              SETTINGS)  # fmt: skip
    assert plan.error is None and plan.job is not None
    pod = plan.job["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v}  # fmt: skip
    assert claims == {"cache": {"claimName": "cache", "readOnly": True},
                      "serving": {"claimName": "serving", "readOnly": False}}  # fmt: skip
    [container] = pod["containers"]
    mounts = {m["mountPath"]: m["readOnly"] for m in container["volumeMounts"] if m["mountPath"].startswith("/mnt")}
    assert mounts == {"/mnt/pvc/cache": True, "/mnt/pvc/serving": False}
    assert container["args"][1:3] == ["pvc://cache/llama", "pvc://demo:serving/llama"]


def test_pvc_of_another_namespace_is_refused_for_a_modelsync() -> None:
    plan = plan_modelsync_job(ms(source={"uri": "pvc://victims:cache/llama"}, target={"uri": "s3://bucket/x"}), {},
                              SETTINGS)  # fmt: skip
    assert plan.job is None and plan.error is not None
    assert plan.error.reason == "ClaimNotMountable"
    assert "spec.source.uri" in plan.error.message and "victims" in plan.error.message


def test_claim_volume_names_are_dns_labels_for_long_claims() -> None:
    claim = "c" * 253
    plan = plan_modelsync_job(ms(source={"uri": f"pvc://{claim}/x"}, target={"uri": "s3://bucket/x"}), {}, SETTINGS)
    assert plan.job is not None
    [volume] = [v for v in plan.job["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert len(volume["name"]) <= 63 and volume["name"].startswith("pvc-")
