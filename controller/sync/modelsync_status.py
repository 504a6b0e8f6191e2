"""ModelSync status, pure: the Job, its pods and the newest progress report -> ``status`` (phase, conditions, progress)."""

from __future__ import annotations

import json
from typing import Any

from modelferry.controller.api.v1alpha1.modelsync import ConditionType
from modelferry.controller.kube.conditions import carry_transition_times, condition
from modelferry.controller.sync.secretmode import Finding
from modelferry.controller.workload.identity import recorded_hash
from modelferry.controller.workload.jobstatus import job_condition, job_phase
from modelferry.logs import scrub


def termination_summary(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest JSON summary that ``modelferry sync`` wrote to the termination log of a sync pod."""
    best: tuple[str, dict[str, Any]] | None = None
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
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
    """Status for bad input: Ready=False with what to fix; no Job exists."""
    old = (modelsync.get("status") or {}).get("conditions") or []
    message = scrub(finding.message, (modelsync.get("metadata") or {}).get("namespace"))
    return {
        "phase": "Failed",
        "observedGeneration": (modelsync.get("metadata") or {}).get("generation"),
        "message": message,
        "jobName": None,
        "conditions": carry_transition_times(
            [
                condition(ConditionType.READY, False, finding.reason, message, now),
                condition(ConditionType.SYNCED, False, finding.reason, "no sync Job was created", now),
            ],
            old,
        ),
    }


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
    old_status = modelsync.get("status") or {}
    old = old_status.get("conditions") or []
    namespace = (modelsync.get("metadata") or {}).get("namespace")
    phase = job_phase(job)
    summary = termination_summary(pods) or {}
    jstatus = (job or {}).get("status") or {}
    status: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": (modelsync.get("metadata") or {}).get("generation"),
        "jobName": ((job or {}).get("metadata") or {}).get("name"),
        "inputsHash": recorded_hash(job),
        "startTime": jstatus.get("startTime"),
        "completionTime": jstatus.get("completionTime"),
    }
    for key, src in (("filesTotal", "files"), ("bytesTotal", "bytes"), ("filesDone", None), ("bytesDone", None)):
        if src and src in summary:
            status[key] = summary[src]
    if "files_copied" in summary:
        status["filesDone"] = int(summary.get("files_copied", 0)) + int(summary.get("files_skipped", 0))
        status["bytesDone"] = int(summary.get("bytes_copied", 0)) + int(summary.get("bytes_skipped", 0))
    if summary.get("revision"):
        status["resolvedRevision"] = scrub(str(summary["revision"]), namespace)
    if phase == "Running":
        status.update(live_progress(live))
    ready = condition(ConditionType.READY, True, "JobCreated", "the sync Job exists", now)
    if phase == "Succeeded":
        message = "the model is synchronized"
        synced = condition(ConditionType.SYNCED, True, "SyncSucceeded", message, now)
    elif phase == "Failed":
        failed = job_condition(job, "Failed") or job_condition(job, "FailureTarget") or {}
        # The failure record comes from the pod: scrubbed like a log line before it reaches status.
        reason = scrub(str(summary.get("reason") or failed.get("reason") or "JobFailed"), namespace)
        message = scrub(str(summary.get("message") or failed.get("message") or "the sync Job failed"), namespace)
        synced = condition(ConditionType.SYNCED, False, reason, message, now)
    elif phase == "Running":
        message = "the sync Job is running"
        synced = condition(ConditionType.SYNCED, False, "SyncRunning", message, now)
    else:
        message = "waiting for the sync Job to start"
        synced = condition(ConditionType.SYNCED, False, "SyncPending", message, now)
    status["message"] = message
    status["conditions"] = carry_transition_times([ready, synced], old)
    return {k: v for k, v in status.items() if v is not None}
