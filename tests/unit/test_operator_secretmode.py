"""Secret mode decisions (pure): seed 004's cases, flags, fall-backs, overrides, hashing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from modelferry.controller.config.controller import ControllerSettings, JobSettings
from modelferry.controller.sync.job import JobRequest, render_job
from modelferry.controller.sync.secretmode import is_model_source, plan_secret_job
from modelferry.controller.workload.identity import ANNOTATION_HASH
from modelferry.controller.workload.jobstatus import job_phase
from modelferry.controller.workload.secrets import is_true, secret_data

SETTINGS = ControllerSettings()


def secret(name: str, data: dict[str, str], **meta: Any) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "demo", "uid": "u1", **meta},
        "data": encoded,
    }


TARGET = secret("demo-models", {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s", "AWS_S3_BUCKET": "dest-bucket",
                              "AWS_S3_ENDPOINT": "https://e", "AWS_DEFAULT_REGION": "r"})  # fmt: skip
SRC = {"S3_SYNC_SRC__PATH": "s3://bucket/folder/", "S3_SYNC_SRC__ACCESS_KEY": "k", "S3_SYNC_SRC__SECRET_KEY": "x"}


def env(job: dict[str, Any]) -> dict[str, Any]:
    items = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") or e.get("value") for e in items}


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("TRUE", True), ("1", True), ("yes", True),
                                                  ("false", False), ("", False), (None, False), ("rm -rf /", False)])  # fmt: skip
def test_flags_are_true_only_for_literals(value: str | None, expected: bool) -> None:
    assert is_true(value) is expected


def test_secret_data_reads_data_and_string_data() -> None:
    obj = {"data": {"A": base64.b64encode(b"1").decode(), "BAD": "%%%"}, "stringData": {"B": "2"}}
    assert secret_data(obj) == {"A": "1", "BAD": "", "B": "2"}


def test_model_source_by_name_or_label() -> None:
    assert is_model_source(secret("model-source", {}), SETTINGS)
    assert is_model_source(secret("x", {}, labels={"modelferry.io/model-source": "True"}), SETTINGS)
    assert not is_model_source(secret("x", {}, labels={"modelferry.io/model-source": "no"}), SETTINGS)


def test_s3_source_falls_back_to_destination_values() -> None:
    plan = plan_secret_job(secret("model-source", SRC), TARGET, SETTINGS)
    assert plan.mode == "s3" and plan.job is not None
    values = env(plan.job)
    assert values["MODELFERRY_SOURCE__S3__ENDPOINT_URL"] == {"name": "demo-models", "key": "AWS_S3_ENDPOINT"}
    assert values["MODELFERRY_SOURCE__S3__REGION"] == {"name": "demo-models", "key": "AWS_DEFAULT_REGION"}
    assert values["MODELFERRY_SOURCE__S3__SECRET_ACCESS_KEY"] == {
        "name": "model-source",
        "key": "S3_SYNC_SRC__SECRET_KEY",
    }
    assert plan.job["metadata"]["name"] == "synchronize-model"


def test_dest_overrides_come_from_model_source() -> None:
    data = {**SRC, "S3_SYNC_DEST__ENDPOINT": "https://other", "S3_SYNC_DEST__BUCKET": "other-bucket"}
    plan = plan_secret_job(secret("model-source", data), TARGET, SETTINGS)
    assert plan.job is not None
    values = env(plan.job)
    assert values["MODELFERRY_TARGET__S3__ENDPOINT_URL"] == {"name": "model-source", "key": "S3_SYNC_DEST__ENDPOINT"}
    assert values["MF_DEST_BUCKET"] == {"name": "model-source", "key": "S3_SYNC_DEST__BUCKET"}
    assert values["MODELFERRY_TARGET__S3__ACCESS_KEY_ID"] == {"name": "demo-models", "key": "AWS_ACCESS_KEY_ID"}


def test_transfer_config_maps_to_engine_settings() -> None:
    data = {**SRC, "S3_SYNC_TRANSFER_CONFIG__MAX_FILES": "4", "S3_SYNC_TRANSFER_CONFIG__MAX_THREADS_PER_FILE": "8",
            "S3_SYNC_TRANSFER_CONFIG__CHUNK_SIZE": "8MiB"}  # fmt: skip
    plan = plan_secret_job(secret("model-source", data), TARGET, SETTINGS)
    assert plan.job is not None
    assert env(plan.job)["MODELFERRY_TRANSFER__CONCURRENCY"] == "32"
    assert env(plan.job)["MODELFERRY_TRANSFER__PART_SIZE"] == str(8 << 20)


def test_cos_api_key_may_retry_but_passcode_may_not() -> None:
    base = {"S3_SYNC_USE_IBMCLOUD_CLI": "yes", "S3_SYNC_COS_BUCKET": "cos-bucket", "S3_SYNC_COS_MODEL_PREFIX": "m",
            "S3_SYNC_COS_INSTANCE_CRN": "crn:v1:x"}  # fmt: skip
    passcode = plan_secret_job(
        secret("model-source", {**base, "S3_SYNC_COS_TEMPORARY_PASSCODE": "p"}), TARGET, SETTINGS
    )
    assert passcode.mode == "cos" and passcode.job is not None
    assert passcode.job["spec"]["backoffLimit"] == 0
    api_key = plan_secret_job(secret("model-source", {**base, "IBMCLOUD_API_KEY": "k"}), TARGET, SETTINGS)
    assert api_key.job is not None
    assert api_key.job["spec"]["backoffLimit"] == SETTINGS.job.backoff_limit
    assert env(api_key.job)["MODELFERRY_SOURCE__COS__API_KEY"] == {"name": "model-source", "key": "IBMCLOUD_API_KEY"}


def test_manual_upload_complete_wins_over_everything() -> None:
    data = {**SRC, "S3_SYNC_USE_IBMCLOUD_CLI": "true", "S3_SYNC_LOCAL_UPLOAD_COMPLETE": "TRUE"}
    plan = plan_secret_job(secret("model-source", data), None, SETTINGS)
    assert plan.mode == "complete" and plan.job is not None
    assert plan.job["spec"]["template"]["spec"]["containers"][0]["args"][0] == "noop"


def test_flag_not_literally_true_is_not_complete() -> None:
    plan = plan_secret_job(secret("model-source", {**SRC, "S3_SYNC_LOCAL_UPLOAD_COMPLETE": "maybe"}), TARGET, SETTINGS)
    assert plan.mode == "s3"


def test_aws_keys_in_model_source_warn() -> None:
    plan = plan_secret_job(secret("model-source", {**SRC, "AWS_SECRET_ACCESS_KEY": "z"}), TARGET, SETTINGS)
    assert [w.reason for w in plan.warnings] == ["IgnoredDestinationKeys"]
    assert plan.job is not None
    assert env(plan.job)["MODELFERRY_TARGET__S3__SECRET_ACCESS_KEY"]["name"] == "demo-models"


def test_data_connection_missing_keys() -> None:
    partial = secret("demo-models", {"AWS_S3_BUCKET": "b"})
    plan = plan_secret_job(secret("model-source", SRC), partial, SETTINGS)
    assert plan.error is not None and plan.error.reason == "DataConnectionInvalid"
    assert "AWS_ACCESS_KEY_ID" in plan.error.message


def test_custom_data_connection_name() -> None:
    plan = plan_secret_job(secret("model-source", {**SRC, "S3_SYNC_DATA_CONNECTION": "mine"}), None, SETTINGS)
    assert plan.error is not None and "'mine'" in plan.error.message


def test_hash_changes_with_data_only() -> None:
    first = plan_secret_job(secret("model-source", SRC), TARGET, SETTINGS).job
    again = plan_secret_job(secret("model-source", dict(SRC)), TARGET, SETTINGS).job
    changed = plan_secret_job(secret("model-source", {**SRC, "S3_SYNC_SRC__SECRET_KEY": "new"}), TARGET, SETTINGS).job
    dest_changed = plan_secret_job(
        secret("model-source", SRC),
        secret("demo-models", {**secret_data(TARGET), "AWS_SECRET_ACCESS_KEY": "t"}),
        SETTINGS,
    ).job
    assert first and again and changed and dest_changed
    hashes = [j["metadata"]["annotations"][ANNOTATION_HASH] for j in (first, again, changed, dest_changed)]
    assert hashes[0] == hashes[1] and len(set(hashes)) == 3
    assert "new" not in json.dumps(changed)


def test_job_is_restricted_v2_friendly() -> None:
    job = render_job(
        JobRequest(name="j", namespace="n", args=["sync", "a", "b"]), JobSettings(ttl_seconds_after_finished=60)
    )
    spec = job["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert "runAsUser" not in sc and "runAsUser" not in pod["securityContext"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2, 3]
    assert rules[1]["action"] == "Ignore"
    assert spec["ttlSecondsAfterFinished"] == 60 and spec["activeDeadlineSeconds"] > 0


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        (None, "Pending"),
        ({}, "Pending"),
        ({"active": 1}, "Running"),
        ({"conditions": [{"type": "Complete", "status": "True"}]}, "Succeeded"),
        ({"conditions": [{"type": "Failed", "status": "True"}]}, "Failed"),
        ({"conditions": [{"type": "Failed", "status": "False"}], "active": 1}, "Running"),
    ],
)
def test_job_phase(status: dict[str, Any] | None, phase: str) -> None:
    assert job_phase(None if status is None else {"status": status}) == phase
