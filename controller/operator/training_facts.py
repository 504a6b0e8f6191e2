"""What the TrainingRun reconciler reads from other objects (pure): ModelSync targets, rank 0, failures, ownership."""

from __future__ import annotations

from typing import Any

from controller.operator.jobs import (
    job_condition,
    secret_data,
)

KIND = "TrainingRun"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
KUBEFLOW_REPLICA = "training.kubeflow.org/replica-type"


def modelsync_ref(tr: dict[str, Any]) -> str | None:
    """The ModelSync a TrainingRun takes its base model from, if any."""
    base = ((tr.get("spec") or {}).get("baseModel")) or {}
    ref = base.get("modelSyncRef") if isinstance(base, dict) else None
    return str(ref["name"]) if isinstance(ref, dict) and ref.get("name") else None


def modelsync_target(ms: dict[str, Any], secrets: dict[str, dict[str, Any]]) -> str | None:
    """Where a ModelSync put the model: its target URI, or the data connection's bucket and path."""
    target = (ms.get("spec") or {}).get("target") or {}
    if target.get("uri"):
        return str(target["uri"])
    dc = target.get("dataConnection")
    bucket = secret_data(secrets.get(dc)).get("AWS_S3_BUCKET") if dc else None
    if not bucket:
        return None
    path = str(target.get("path") or "models/").strip("/")
    return f"s3://{bucket}/{path}" if path else f"s3://{bucket}"


def synced_models(modelsyncs: list[dict[str, Any]], secrets: dict[str, dict[str, Any]]) -> dict[str, str]:
    """ModelSync name -> target URI, for the ModelSyncs of one namespace that finished syncing."""
    out: dict[str, str] = {}
    for ms in modelsyncs:
        if (ms.get("status") or {}).get("phase") != "Succeeded":
            continue
        uri = modelsync_target(ms, secrets)
        if uri:
            out[str((ms.get("metadata") or {}).get("name"))] = uri
    return out


def rank_zero_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pod whose sidecar reports (rank 0 / the PyTorchJob master), the newest one when retried."""

    def is_rank_zero(pod: dict[str, Any]) -> bool:
        meta = pod.get("metadata") or {}
        labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
        index = labels.get(INDEX_KEY, notes.get(INDEX_KEY))
        replica = str(labels.get(KUBEFLOW_REPLICA, "")).lower()
        return (index in (None, "0") and replica in ("", "master")) or replica == "master"

    candidates = [p for p in pods if is_rank_zero(p)]
    if not candidates:
        return None
    return max(candidates, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))


def failure_report(workload: dict[str, Any] | None) -> dict[str, Any] | None:
    """A report from the workload's Failed condition when the sidecar left no termination message."""
    cond = job_condition(workload, "Failed") or job_condition(workload, "FailureTarget")
    if not cond:
        return None
    reason = str(cond.get("reason") or "TrainingFailed")
    message = str(cond.get("message") or "the training workload failed")
    return {"reason": reason, "message": f"{message}; see the pod logs and <output>/failed/"}
