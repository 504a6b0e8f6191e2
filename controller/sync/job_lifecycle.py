"""What the two kinds that run synchronize Jobs share: ensuring the Job, never re-running a finished one,
and one Event per Job phase transition. Secret mode and ModelSync each build on it."""

from __future__ import annotations

from typing import Any

from modelferry.controller.kube.client import JOBS
from modelferry.controller.reconcile.owned import Ensured, OwnedObjects
from modelferry.controller.reconcile.parts import Key, Parts, cached
from modelferry.controller.workload.identity import recorded_hash
from modelferry.controller.workload.jobstatus import job_condition, job_phase


class SyncJobs:
    """The synchronize Job of each object of one kind (``Secret`` or ``ModelSync``)."""

    def __init__(self, parts: Parts, kind: str) -> None:
        self.parts = parts
        self.kind = kind
        self.owned = OwnedObjects(parts, kind, lambda: {JOBS: parts.jobs})
        self._phases: dict[Key, str] = {}
        self.succeeded: dict[Key, str | None] = {}  # the inputs hash each object last succeeded with

    def live(self, namespace: str, name: str) -> dict[str, Any] | None:
        return cached(self.parts.jobs, namespace, name)

    async def ensure(self, key: Key, owner: dict[str, Any], desired: dict[str, Any]) -> Ensured | None:
        """Create or replace the Job; None when it already succeeded with these inputs and was cleaned up
        (``ttlSecondsAfterFinished``): a finished sync is never re-run."""
        name = desired["metadata"]["name"]
        live = self.live(key[1], name)  # a stale miss costs a 409 and a requeue, never a duplicate
        if live is None and self.succeeded.get(key) == recorded_hash(desired):
            return None
        ensured = await self.owned.ensure(key, owner, JOBS, desired, live)
        if ensured.created:
            self._phases.pop(key, None)
        return ensured

    async def delete(self, key: Key, name: str) -> None:
        """The object is gone: delete its Job (garbage collection may be absent) and forget its state."""
        await self.owned.delete(JOBS, key[2], self.live(key[1], name))
        self.parts.findings.forget(key)
        self._phases.pop(key, None)
        self.succeeded.pop(key, None)

    async def phase_events(self, key: Key, owner: dict[str, Any], job: dict[str, Any] | None, hint: str = "") -> None:
        """SyncSucceeded / SyncFailed, once per transition of the Job's phase."""
        phase = job_phase(job)
        if self._phases.get(key) == phase:
            return
        self._phases[key] = phase
        if phase == "Succeeded":
            self.succeeded[key] = recorded_hash(job)
            await self.parts.recorder.emit(owner, "Normal", "SyncSucceeded", "the synchronize Job completed")
        elif phase == "Failed":
            cond = job_condition(job, "Failed") or {}
            message = f"the synchronize Job failed: {cond.get('reason', 'JobFailed')} {cond.get('message', '')}".strip()
            await self.parts.recorder.emit(owner, "Warning", "SyncFailed", message + hint)
