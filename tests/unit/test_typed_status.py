"""Statuses on the typed API: a wrong-shaped spec reads no Secret; what a pod reports is checked before status."""

from __future__ import annotations

import json
from typing import Any

from modelferry.controller.sync.modelsync import referenced_secrets
from modelferry.controller.sync.modelsync_status import error_status, job_status
from modelferry.controller.sync.secretmode import Finding

NOW = "2026-01-01T00:00:00Z"


def _modelsync(spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "ModelSync", "metadata": {"name": "m", "namespace": "ns", "generation": 2}, "spec": spec}


def _pod(summary: dict[str, Any]) -> dict[str, Any]:
    terminated = {"message": json.dumps(summary), "finishedAt": NOW}
    return {"status": {"containerStatuses": [{"state": {"terminated": terminated}}]}}


def test_referenced_secrets_reads_every_side() -> None:
    spec = {
        "source": {"uri": "hf://org/repo", "credentialsSecret": "hf"},
        "target": {"dataConnection": "conn", "credentialsSecret": "tgt"},
        "decrypt": {"credentialsSecret": "kms"},
    }
    assert referenced_secrets(_modelsync(spec)) == ["hf", "tgt", "conn", "kms"]


def test_referenced_secrets_of_a_wrong_shape_is_empty() -> None:
    assert referenced_secrets(_modelsync({"source": "hf://org/repo", "target": {"uri": "s3://b/p"}})) == []


def test_summary_counts_that_are_not_numbers_are_dropped() -> None:
    job = {"metadata": {"name": "modelsync-m"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    status = job_status(_modelsync({}), job, [_pod({"files": "lots", "bytes": True})], NOW)
    assert "filesTotal" not in status and "bytesTotal" not in status
    assert status["phase"] == "Succeeded"
    good = job_status(_modelsync({}), job, [_pod({"files": 3, "bytes": 10})], NOW)
    assert (good["filesTotal"], good["bytesTotal"]) == (3, 10)


def test_error_status_clears_the_job_name() -> None:
    status = error_status(_modelsync({}), Finding("InvalidSourceURI", "bad"), NOW)
    assert status["jobName"] is None and status["observedGeneration"] == 2 and status["phase"] == "Failed"
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Synced"]


def test_training_status_drops_report_values_that_are_not_text() -> None:
    from modelferry.controller.training.status import compute_status

    run = {"metadata": {"name": "t", "namespace": "ns", "generation": 1}, "status": {"outputUri": "s3://b/out"}}
    job = {"metadata": {"name": "train-t"}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    status = compute_status(run, job, report={"reason": 7, "mlflowRunId": ["x"], "message": "oom"}, now=NOW)
    complete = status["conditions"][1]
    assert (complete["reason"], complete["message"]) == ("TrainingFailed", "oom")
    assert "mlflowRunId" not in status and status["outputUri"] == "s3://b/out"
