"""What the TrainingRun reconciler reads from other objects (pure): the ModelSync it names, rank 0, failures."""

from __future__ import annotations

from typing import Any

from modelferry.controller.workload.jobstatus import job_condition

KIND = "TrainingRun"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
KUBEFLOW_REPLICA = "training.kubeflow.org/replica-type"


def modelsync_ref(run: dict[str, Any]) -> str | None:
    """The ModelSync a TrainingRun takes its base model from, if any."""
    base = ((run.get("spec") or {}).get("baseModel")) or {}
    ref = base.get("modelSyncRef") if isinstance(base, dict) else None
    return str(ref["name"]) if isinstance(ref, dict) and ref.get("name") else None


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
