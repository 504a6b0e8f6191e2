"""TrainingRun status from what the cluster shows (pure): the Job's conditions and the sidecar's reports.

The sidecar reports twice: while running, a ``MODELFERRY_PROGRESS {json}`` line in its log every few
seconds (read with pods/log, the newest one wins); at the end, its termination message (phase,
reason, exit code, MLflow run id, output URI, final progress).
"""

from __future__ import annotations

import json
from typing import Any

from modelferry.controller.api.meta import Condition, Phase
from modelferry.controller.api.v1alpha1.trainingrun import ConditionType, TrainingRunStatus
from modelferry.controller.kube.conditions import carry_transition_times, condition
from modelferry.controller.training.validate import Problem
from modelferry.logs import scrub_record

PROGRESS_PREFIX = "MODELFERRY_PROGRESS "


def progress_from_log(text: str) -> dict[str, Any] | None:
    """The newest progress report in a chunk of the sidecar's log (JSON log lines included)."""
    for line in reversed(text.splitlines()):
        idx = line.find(PROGRESS_PREFIX)
        if idx < 0:
            continue
        try:
            report = json.loads(line[idx + len(PROGRESS_PREFIX) :])
        except json.JSONDecodeError:
            continue
        if isinstance(report, dict):
            return report
    return None


def termination_report(pod: dict[str, Any] | None, container: str = "sidecar") -> dict[str, Any] | None:
    """The sidecar's termination message from a pod's container statuses."""
    for status in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != container:
            continue
        message = ((status.get("state") or {}).get("terminated") or {}).get("message")
        if message:
            try:
                data = json.loads(message)
            except json.JSONDecodeError:
                return None
            return data if isinstance(data, dict) else None
    return None


def _workload_phase(workload: dict[str, Any] | None) -> str:
    if workload is None:
        return "Pending"
    status = workload.get("status") or {}
    for cond in status.get("conditions") or []:
        if str(cond.get("status")) != "True":
            continue
        if cond.get("type") in ("Complete", "Succeeded", "SuccessCriteriaMet"):
            return "Succeeded"
        if cond.get("type") in ("Failed", "FailureTarget"):
            return "Failed"
        if cond.get("type") == "Running":
            return "Running"
    active = (status.get("active") or 0) + sum(j.get("active") or 0 for j in status.get("jobsStatus") or [])
    return "Running" if active > 0 else "Pending"  # a TrainJob reports its JobSet's jobs in jobsStatus


def _text(value: Any) -> str | None:
    """A string the sidecar reported; anything else (the pod writes it) is dropped."""
    return value if isinstance(value, str) and value else None


def compute_status(
    trainingrun: dict[str, Any],
    workload: dict[str, Any] | None,
    *,
    problem: Problem | None = None,
    report: dict[str, Any] | None = None,
    now: str = "",
) -> dict[str, Any]:
    """The TrainingRun's ``status`` (phase, conditions, progress, mlflowRunId, outputUri).

    Reports come from the pod: every string is scrubbed like a log line before it reaches the status.
    """
    old = trainingrun.get("status") or {}
    generation = (trainingrun.get("metadata") or {}).get("generation")
    namespace = (trainingrun.get("metadata") or {}).get("namespace")
    if problem is not None:
        failed = TrainingRunStatus(
            phase=Phase.FAILED if problem.reason != "BaseModelNotReady" else Phase.PENDING,
            observed_generation=generation,
            conditions=[
                Condition.model_validate(condition(ConditionType.READY, False, problem.reason, problem.message, now))
            ],
        )
        return dict(scrub_record({"observedGeneration": generation, **failed.wire()}, namespace))
    phase = Phase(_workload_phase(workload))
    report = report or {}
    conditions = [condition(ConditionType.READY, True, "JobCreated", "the training workload exists", now)]
    if phase == Phase.SUCCEEDED:
        conditions.append(
            condition(
                ConditionType.COMPLETE,
                True,
                "TrainingSucceeded",
                _text(report.get("message")) or "training finished",
                now,
            )
        )
    elif phase == Phase.FAILED:
        reason = _text(report.get("reason")) or "TrainingFailed"
        message = _text(report.get("message")) or "the training workload failed; see the pod logs and <output>/failed/"
        conditions.append(condition(ConditionType.COMPLETE, False, reason, message, now))
    else:
        conditions.append(
            condition(
                ConditionType.COMPLETE, False, "Running" if phase == Phase.RUNNING else "Pending", phase.value, now
            )
        )
    typed = TrainingRunStatus.model_validate(
        {
            "phase": phase,
            "observedGeneration": generation,
            "jobName": (workload.get("metadata") or {}).get("name") if workload is not None else None,
            "mlflowRunId": _text(report.get("mlflowRunId")) or _text(old.get("mlflowRunId")),
            "outputUri": _text(report.get("outputUri")) or _text(old.get("outputUri")),
            "conditions": carry_transition_times(conditions, old.get("conditions")),
        }
    )
    status = {"observedGeneration": generation, **typed.wire()}
    # The sidecar's progress as it reported it (its metrics keep the trainer's own names and values).
    progress = report.get("progress") or old.get("progress")
    if progress:
        status["progress"] = progress
    return dict(scrub_record(status, namespace))
