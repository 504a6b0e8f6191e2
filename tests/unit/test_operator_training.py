"""The TrainingRun reconciler's pure helpers and the RBAC it needs."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from modelferry.controller.kube.conditions import keep_transition_times
from modelferry.controller.sync.targets import modelsync_target, synced_models
from modelferry.controller.training import RenderContext, render
from modelferry.controller.training.facts import failure_report, modelsync_ref, rank_zero_pod
from modelferry.controller.training.reconciler import workload_name

ROOT = Path(__file__).resolve().parents[2]


def pod(name: str, created: str = "2026-01-01T00:00:00Z", **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels, "creationTimestamp": created}}


def modelsync(name: str, target: dict[str, Any], phase: str | None = "Succeeded") -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"target": target}, "status": {"phase": phase} if phase else {}}


def test_workload_name_matches_render() -> None:
    name = "a" * 70
    tr = {
        "metadata": {"name": name, "namespace": "ns", "uid": "u"},
        "spec": {
            "baseModel": {"uri": "s3://models/base"},
            "dataset": {"uri": "s3://data/train.jsonl"},
            "trainer": {"runtime": "peft-lora"},
            "output": {"uri": "s3://outputs/out"},
        },
    }
    result = render(tr, RenderContext())
    assert result.problem is None
    assert result.objects[0]["metadata"]["name"] == workload_name(name)
    assert len(workload_name(name)) <= 63


def test_modelsync_ref() -> None:
    assert modelsync_ref({"spec": {"baseModel": {"modelSyncRef": {"name": "qwen"}}}}) == "qwen"
    assert modelsync_ref({"spec": {"baseModel": {"uri": "s3://b/m"}}}) is None
    assert modelsync_ref({}) is None


def test_modelsync_target_uri_and_data_connection() -> None:
    secret = {"data": {"AWS_S3_BUCKET": base64.b64encode(b"models-bucket").decode()}}
    assert modelsync_target(modelsync("a", {"uri": "s3://b/m"}), {}) == "s3://b/m"
    dc = modelsync("b", {"dataConnection": "demo-models", "path": "models/qwen/"})
    assert modelsync_target(dc, {"demo-models": secret}) == "s3://models-bucket/models/qwen"
    assert modelsync_target(modelsync("c", {"dataConnection": "demo-models"}), {"demo-models": secret}) == (
        "s3://models-bucket/models"
    )
    assert modelsync_target(dc, {}) is None  # the data connection is gone


def test_synced_models_only_finished() -> None:
    syncs = [
        modelsync("done", {"uri": "s3://b/done"}),
        modelsync("running", {"uri": "s3://b/running"}, "Running"),
        modelsync("fresh", {"uri": "s3://b/fresh"}, None),
        modelsync("nowhere", {"dataConnection": "missing"}),
    ]
    assert synced_models(syncs, {}) == {"done": "s3://b/done"}


def test_rank_zero_pod() -> None:
    idx = "batch.kubernetes.io/job-completion-index"
    rt = "training.kubeflow.org/replica-type"
    assert rank_zero_pod([pod("w1", **{idx: "1"}), pod("w0", **{idx: "0"})])["metadata"]["name"] == "w0"  # type: ignore[index]
    assert rank_zero_pod([pod("w", **{rt: "worker"}), pod("m", **{rt: "master"})])["metadata"]["name"] == "m"  # type: ignore[index]
    newest = rank_zero_pod([pod("old", "2026-01-01T00:00:00Z"), pod("new", "2026-01-02T00:00:00Z")])
    assert newest is not None and newest["metadata"]["name"] == "new"  # a retried pod
    assert rank_zero_pod([pod("w1", **{idx: "1"})]) is None
    assert rank_zero_pod([]) is None


def test_failure_report_from_job_condition() -> None:
    job = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    report = failure_report(job)
    assert report is not None and report["reason"] == "DeadlineExceeded"
    assert failure_report({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}) is None
    assert failure_report(None) is None


def test_keep_transition_times() -> None:
    old = {"conditions": [{"type": "Ready", "status": "False", "reason": "X", "lastTransitionTime": "t0"}]}
    same = {"conditions": [{"type": "Ready", "status": "False", "reason": "X", "lastTransitionTime": "t1"}]}
    other = {"conditions": [{"type": "Ready", "status": "False", "reason": "Y", "lastTransitionTime": "t1"}]}
    assert keep_transition_times(old, same)["conditions"][0]["lastTransitionTime"] == "t0"
    # one rule for every kind: the time moves with the status only, never with the reason alone
    assert keep_transition_times(old, other)["conditions"][0]["lastTransitionTime"] == "t0"
    flipped = {"conditions": [{"type": "Ready", "status": "True", "reason": "Y", "lastTransitionTime": "t1"}]}
    assert keep_transition_times(old, flipped)["conditions"][0]["lastTransitionTime"] == "t1"


def controller_grants() -> dict[tuple[str, str], set[str]]:
    """(API group, resource) -> verbs the controller's ClusterRole grants."""
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "controller" / "rbac.yaml").read_text()) if d]
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_rbac_covers_training() -> None:
    granted = controller_grants()
    needed = {
        ("modelferry.io", "trainingruns"): {"get", "list", "watch"},
        ("modelferry.io", "trainingruns/status"): {"patch"},
        ("", "services"): {"get", "list", "watch", "create", "delete"},
        ("", "pods"): {"get", "list"},
        ("", "pods/log"): {"get"},
        ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
        ("kubeflow.org", "pytorchjobs"): {"get", "list", "watch", "create", "delete"},
        ("trainer.kubeflow.org", "trainjobs"): {"get", "list", "watch", "create", "delete"},
        ("trainer.kubeflow.org", "trainingruntimes"): {"get", "create", "delete"},
    }
    for key, verbs in needed.items():
        assert verbs <= granted.get(key, set()), key
