"""Secret mode against the Kubernetes API emulator over real HTTP with the real kubernetes-asyncio client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.servers.kube_controller import NS, Harness, eventually, running

TARGET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "demo-models", "namespace": NS, "labels": {"opendatahub.io/dashboard": "true"}},
    "stringData": {
        "AWS_ACCESS_KEY_ID": "dest-access-key",
        "AWS_SECRET_ACCESS_KEY": "dest-secret-key-value",
        "AWS_S3_ENDPOINT": "https://s3.openshift-storage.svc:443",
        "AWS_S3_BUCKET": "demo-bucket-1234",
        "AWS_DEFAULT_REGION": "us-east-1",
    },
}


def source_secret(data: dict[str, str], name: str = "model-source") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "stringData": data}


S3_SOURCE = {
    "S3_SYNC_SRC__ENDPOINT": "https://s3.us-east-1.amazonaws.com",
    "S3_SYNC_SRC__PATH": "s3://bucket/folder/",
    "S3_SYNC_SRC__ACCESS_KEY": "src-access-key",
    "S3_SYNC_SRC__SECRET_KEY": "src-secret-key-value",
}


@pytest.fixture
async def harness(kube_backend: Callable[..., Any]) -> AsyncIterator[Harness]:
    async with running(kube_backend()) as h:
        yield h


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") or e.get("value") for e in container["env"]}


def assert_no_secret_values(job: dict[str, Any], *secrets: dict[str, Any]) -> None:
    text = json.dumps(job)
    for secret in secrets:
        for key, value in secret["stringData"].items():
            if "KEY" in key or "PASSCODE" in key or "SECRET" in key:
                assert value not in text, f"{key} was copied into the Job"


async def test_s3_source_secret_creates_job_with_references(harness: Harness) -> None:
    await harness.apply(TARGET)
    src = source_secret(S3_SOURCE)
    await harness.apply(src)
    await harness.start()
    job = await eventually(harness.job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["sync", "$(MF_SOURCE_URI)", "s3://$(MF_DEST_BUCKET)/models/", "--json"]
    env = env_of(job)
    assert env["MF_SOURCE_URI"] == {"name": "model-source", "key": "S3_SYNC_SRC__PATH"}
    assert env["MODELFERRY_SOURCE__S3__ACCESS_KEY_ID"] == {"name": "model-source", "key": "S3_SYNC_SRC__ACCESS_KEY"}
    # Unset source region falls back to the destination's AWS_DEFAULT_REGION.
    assert env["MODELFERRY_SOURCE__S3__REGION"] == {"name": "demo-models", "key": "AWS_DEFAULT_REGION"}
    assert env["MODELFERRY_TARGET__S3__SECRET_ACCESS_KEY"] == {"name": "demo-models", "key": "AWS_SECRET_ACCESS_KEY"}
    assert env["MF_DEST_BUCKET"] == {"name": "demo-models", "key": "AWS_S3_BUCKET"}
    assert env["MODELFERRY_TRANSFER__CONCURRENCY"] == "5"
    assert env["MODELFERRY_TRANSFER__PART_SIZE"] == str(15 << 20)
    assert_no_secret_values(job, src, TARGET)
    spec = job["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 3]
    owner = job["metadata"]["ownerReferences"][0]
    assert (
        owner["kind"] == "Secret"
        and owner["uid"] == harness.emu.get("v1", "secrets", NS, "model-source")["metadata"]["uid"]
    )
    await eventually(lambda: harness.events("JobCreated"))


async def test_cos_passcode_secret_is_never_retried(harness: Harness) -> None:
    await harness.apply(TARGET)
    src = source_secret(
        {
            "S3_SYNC_USE_IBMCLOUD_CLI": "True",
            "S3_SYNC_COS_INSTANCE_CRN": "crn:v1:bluemix:public:cloud-object-storage:global:a/acc:inst:bucket:mybucket",
            "S3_SYNC_COS_INSTANCE_REGION": "us-geo",
            "S3_SYNC_COS_BUCKET": "mybucket",
            "S3_SYNC_COS_MODEL_PREFIX": "models/granite",
            "S3_SYNC_COS_TEMPORARY_PASSCODE": "PASSCODE-abc123",
        }
    )
    await harness.apply(src)
    await harness.start()
    job = await eventually(harness.job)
    assert job["spec"]["backoffLimit"] == 0
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][1] == "cos://$(MF_COS_BUCKET)/$(MF_COS_PREFIX)"
    env = env_of(job)
    assert env["MODELFERRY_SOURCE__COS__PASSCODE"] == {"name": "model-source", "key": "S3_SYNC_COS_TEMPORARY_PASSCODE"}
    assert env["MODELFERRY_SOURCE__COS__REGION"]["key"] == "S3_SYNC_COS_INSTANCE_REGION"
    assert_no_secret_values(job, src, TARGET)
    # A failed passcode Job says how to retry.
    await harness.emu.set_status(
        "batch/v1", "jobs", NS, "synchronize-model",
        {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]},
    )  # fmt: skip
    failed = await eventually(lambda: harness.events("SyncFailed"))
    assert "fresh S3_SYNC_COS_TEMPORARY_PASSCODE" in failed[0]["message"]


async def test_manual_upload_complete_wins_without_data_connection(harness: Harness) -> None:
    src = source_secret({"S3_SYNC_LOCAL_UPLOAD_COMPLETE": "yes", "S3_SYNC_SRC__PATH": "s3://ignored/"})
    await harness.apply(src)
    await harness.start()
    job = await eventually(harness.job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "noop"
    assert "S3_SYNC_LOCAL_UPLOAD_COMPLETE" in container["args"][2]
    assert not any("valueFrom" in e for e in container["env"])


async def test_secret_change_replaces_job_and_reapply_does_not(harness: Harness) -> None:
    await harness.apply(TARGET)
    await harness.apply(source_secret(S3_SOURCE))
    controller = await harness.start()
    first = await eventually(harness.job)
    uid = first["metadata"]["uid"]
    await harness.apply(source_secret(S3_SOURCE))  # unchanged data, new resourceVersion
    await harness.apply(TARGET)
    # a reconcile that saw both writes has run (and had the chance to wrongly act)
    await harness.reconciled(controller, ("Secret", NS, "model-source"), source_secret(S3_SOURCE), TARGET)
    assert harness.job()["metadata"]["uid"] == uid
    await harness.apply(source_secret({**S3_SOURCE, "S3_SYNC_SRC__PATH": "s3://bucket/other/"}))
    replaced = await eventually(lambda: (j := harness.job()) and j["metadata"]["uid"] != uid and j)
    assert (
        replaced["metadata"]["annotations"]["modelferry.io/inputs-hash"]
        != first["metadata"]["annotations"]["modelferry.io/inputs-hash"]
    )
    await eventually(lambda: harness.events("JobReplaced"))


async def test_restart_creates_no_duplicate_job(harness: Harness) -> None:
    await harness.apply(TARGET)
    await harness.apply(source_secret(S3_SOURCE))
    controller = await harness.start()
    job = await eventually(harness.job)
    assert await harness.stop(controller) == 0
    restarted = await harness.start()
    await eventually(restarted.ready)
    await harness.reconciled(restarted, ("Secret", NS, "model-source"), source_secret(S3_SOURCE), TARGET)
    posts = [r for r in harness.emu.requests if r[0] == "POST" and "/jobs" in r[1]]
    assert len(posts) == 1
    assert harness.job()["metadata"]["uid"] == job["metadata"]["uid"]


@pytest.mark.parametrize(
    ("data", "target", "reason"),
    [
        (S3_SOURCE, False, "DataConnectionNotFound"),
        ({**S3_SOURCE, "S3_SYNC_SRC__PATH": "s3://"}, True, "InvalidSourceURI"),
        ({"S3_SYNC_SRC__ENDPOINT": "https://x"}, True, "SourceNotConfigured"),
        ({"S3_SYNC_USE_IBMCLOUD_CLI": "1", "S3_SYNC_COS_BUCKET": "b"}, True, "SourceNotConfigured"),
        ({**S3_SOURCE, "S3_SYNC_TRANSFER_CONFIG__MAX_FILES": "many"}, True, "InvalidTransferConfig"),
    ],
)
async def test_bad_secret_gives_event_and_no_job(
    harness: Harness, data: dict[str, str], target: bool, reason: str
) -> None:
    if target:
        await harness.apply(TARGET)
    await harness.apply(source_secret(data))
    await harness.start()
    events = await eventually(lambda: harness.events(reason))
    assert events[0]["type"] == "Warning" and "no Job was created" in events[0]["message"]
    assert harness.job() is None


async def test_aws_keys_in_model_source_warn_and_do_not_replace_destination(harness: Harness) -> None:
    await harness.apply(TARGET)
    await harness.apply(source_secret({**S3_SOURCE, "AWS_ACCESS_KEY_ID": "sneaky"}))
    await harness.start()
    job = await eventually(harness.job)
    assert env_of(job)["MODELFERRY_TARGET__S3__ACCESS_KEY_ID"] == {"name": "demo-models", "key": "AWS_ACCESS_KEY_ID"}
    assert await eventually(lambda: harness.events("IgnoredDestinationKeys"))


async def test_late_data_connection_triggers_job(harness: Harness) -> None:
    await harness.apply(source_secret(S3_SOURCE))
    await harness.start()
    await eventually(lambda: harness.events("DataConnectionNotFound"))
    await harness.apply(TARGET)
    assert await eventually(harness.job)


@pytest.mark.parametrize("gc", [True, False])
async def test_deleting_secret_removes_job(gc: bool, kube_backend: Callable[..., Any]) -> None:
    async with running(kube_backend(garbage_collect=gc)) as h:
        await h.apply(TARGET)
        await h.apply(source_secret(S3_SOURCE))
        await h.start()
        await eventually(h.job)
        await h.emu.remove("v1", "secrets", NS, "model-source")
        await eventually(lambda: h.job() is None)


async def test_labelled_secret_counts_as_model_source(harness: Harness) -> None:
    await harness.apply(TARGET)
    src = source_secret(S3_SOURCE, name="my-source")
    src["metadata"]["labels"] = {"modelferry.io/model-source": "true"}
    await harness.apply(src)
    await harness.start()
    job = await eventually(harness.job)
    assert job["metadata"]["labels"]["modelferry.io/owner-name"] == "my-source"
