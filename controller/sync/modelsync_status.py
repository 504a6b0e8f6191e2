"""ModelSync status, pure: the Job, its pods and the newest progress report -> ``status`` (phase, conditions, progress)."""

from __future__ import annotations

import json
from typing import Any

from modelferry.controller.api.meta import Phase
from modelferry.controller.api.v1alpha1.modelsync import ConditionType, ModelSyncStatus
from modelferry.controller.kube.conditions import Condition, carry_transition_times, condition
from modelferry.controller.sync.secretmode import Finding
from modelferry.controller.workload.identity import recorded_hash
from modelferry.controller.workload.jobstatus import job_condition, job_phase
from modelferry.logs import scrub


def termination_summary(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest JSON summary that ``modelferry sync`` wrote to the termination log of a sync pod."""
    best: tuple[str, dict[str, Any]] | None = None
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (container.get("state") or {}).get("terminated") or {}
            try:
                payload = json.loads(term.get("message") or "")
            except ValueError:
                continue
            if isinstance(payload, dict):
                stamp = str(term.get("finishedAt") or "")
                if best is None or stamp >= best[0]:
                    best = (stamp, payload)
    return best[1] if best else None


def error_status(modelsync: dict[str, Any], finding: Finding, now: str) -> dict[str, Any]:
    """Status for bad input: Ready=False with what to fix; no Job exists (``jobName`` null clears the old one)."""
    old = (modelsync.get("status") or {}).get("conditions") or []
    message = scrub(finding.message, (modelsync.get("metadata") or {}).get("namespace"))
    status = ModelSyncStatus.model_validate(
        {
            "phase": Phase.FAILED,
            "observedGeneration": (modelsync.get("metadata") or {}).get("generation"),
            "message": message,
            "conditions": carry_transition_times(
                [
                    condition(ConditionType.READY, False, finding.reason, message, now),
                    condition(ConditionType.SYNCED, False, finding.reason, "no sync Job was created", now),
                ],
                old,
            ),
        }
    )
    # A merge patch: the nulls remove what an earlier Job's status set.
    return {"observedGeneration": None, "jobName": None, **status.wire()}


def live_progress(report: dict[str, Any] | None) -> dict[str, Any]:
    """Status fields from a running sync's ``MODELFERRY_PROGRESS`` report (see ``parse_progress_line``)."""
    if not report:
        return {}
    out: dict[str, Any] = {
        "filesDone": report["files_done"],
        "filesTotal": report["files_total"],
        "bytesDone": report["bytes_done"],
        "bytesTotal": report["bytes_total"],
    }
    total, done = report["bytes_total"], report["bytes_done"]
    out["percent"] = round(min(100.0, 100.0 * done / total), 1) if total > 0 else 100.0
    if isinstance(report.get("eta_s"), (int, float)):
        out["etaSeconds"] = float(report["eta_s"])
    if isinstance(report.get("rate_bytes_per_s"), int):
        out["rateBytesPerSecond"] = report["rate_bytes_per_s"]
    return out


def _count(value: Any) -> int | None:
    """A count from the sync's summary (written by the pod: anything that is not a whole number is dropped)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _synced(job: dict[str, Any] | None, phase: str, summary: dict[str, Any], namespace: Any, now: str) -> Condition:
    """The Synced condition for the Job's phase (a failure's reason and message from the pod, scrubbed)."""
    if phase == Phase.SUCCEEDED:
        return condition(ConditionType.SYNCED, True, "SyncSucceeded", "the model is synchronized", now)
    if phase == Phase.FAILED:
        failed = job_condition(job, "Failed") or job_condition(job, "FailureTarget") or {}
        # The failure record comes from the pod: scrubbed like a log line before it reaches status.
        reason = scrub(str(summary.get("reason") or failed.get("reason") or "JobFailed"), namespace)
        message = scrub(str(summary.get("message") or failed.get("message") or "the sync Job failed"), namespace)
        return condition(ConditionType.SYNCED, False, reason, message, now)
    if phase == Phase.RUNNING:
        return condition(ConditionType.SYNCED, False, "SyncRunning", "the sync Job is running", now)
    return condition(ConditionType.SYNCED, False, "SyncPending", "waiting for the sync Job to start", now)


def job_status(
    modelsync: dict[str, Any],
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    now: str,
    live: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Status from the ModelSync's Job and its pods (progress from the termination message).

    ``live`` is the newest progress report read from the sync container's log; it only
    counts while the Job runs (the termination message is the final word).
    """
    old = (modelsync.get("status") or {}).get("conditions") or []
    namespace = (modelsync.get("metadata") or {}).get("namespace")
    phase = job_phase(job)
    summary = termination_summary(pods) or {}
    job_state = (job or {}).get("status") or {}
    fields: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": (modelsync.get("metadata") or {}).get("generation"),
        "jobName": ((job or {}).get("metadata") or {}).get("name"),
        "inputsHash": recorded_hash(job),
        "startTime": job_state.get("startTime"),
        "completionTime": job_state.get("completionTime"),
        "filesTotal": _count(summary.get("files")),
        "bytesTotal": _count(summary.get("bytes")),
    }
    if "files_copied" in summary:
        fields["filesDone"] = int(summary.get("files_copied", 0)) + int(summary.get("files_skipped", 0))
        fields["bytesDone"] = int(summary.get("bytes_copied", 0)) + int(summary.get("bytes_skipped", 0))
    if summary.get("revision"):
        fields["resolvedRevision"] = scrub(str(summary["revision"]), namespace)
    if phase == Phase.RUNNING:
        fields.update(live_progress(live))
    ready = condition(ConditionType.READY, True, "JobCreated", "the sync Job exists", now)
    synced = _synced(job, phase, summary, namespace, now)
    fields["message"] = synced["message"]
    fields["conditions"] = carry_transition_times([ready, synced], old)
    return ModelSyncStatus.model_validate(fields).wire()
