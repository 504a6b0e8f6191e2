"""A Job's state, read from its status conditions (pure)."""

from __future__ import annotations

from typing import Any


def job_condition(job: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The Job's condition of type ``kind`` (Complete, Failed, ...) when it is True."""
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and str(cond.get("status")) == "True":
            return dict(cond)
    return None


def job_phase(job: dict[str, Any] | None) -> str:
    """Pending, Running, Succeeded or Failed, from a Job's status."""
    if job is None:
        return "Pending"
    if job_condition(job, "Complete") or job_condition(job, "SuccessCriteriaMet"):
        return "Succeeded"
    if job_condition(job, "Failed") or job_condition(job, "FailureTarget"):
        return "Failed"
    if ((job.get("status") or {}).get("active") or 0) > 0:
        return "Running"
    return "Pending"
