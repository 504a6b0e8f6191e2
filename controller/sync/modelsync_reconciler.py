"""ModelSync's reconciler: a ModelSync + the Secrets it names -> ``plan_modelsync_job`` -> the Job -> status.

The decisions are the pure functions of :mod:`modelferry.controller.sync.modelsync` (the Job) and
:mod:`modelferry.controller.sync.modelsync_status` (the status); this adapter watches ModelSyncs, ensures the Job,
reads progress from the running sync container's log, and writes status.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelferry.controller.kube.client import MODELSYNCS, PODS
from modelferry.controller.kube.events import now_iso
from modelferry.controller.kube.watch import Backoff, Informer, object_key
from modelferry.controller.reconcile.log_progress import LogProgress
from modelferry.controller.reconcile.parts import Caches, Key, Parts, cached, cached_all
from modelferry.controller.reconcile.status import patch_status
from modelferry.controller.sync.job import CONTAINER
from modelferry.controller.sync.job_lifecycle import SyncJobs
from modelferry.controller.sync.modelsync import KIND, job_name, plan_modelsync_job, referenced_secrets
from modelferry.controller.sync.modelsync_status import error_status, job_status, termination_summary
from modelferry.controller.workload.jobstatus import job_phase
from modelferry.transfer.progress import parse_progress_line


class ModelSyncReconciler:
    """Level-triggered reconcile of ModelSyncs into synchronize Jobs and status."""

    kind = KIND

    def __init__(self, parts: Parts, namespaces: list[str | None], backoff: Backoff) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.jobs = SyncJobs(parts, KIND)
        self.listeners: list[Callable[[str, str], None]] = []  # told of every ModelSync change (TrainingRuns)
        # Newest progress report per running ModelSync, from its sync container's log.
        self.progress = LogProgress(
            parts.kube,
            CONTAINER,
            parse_progress_line,
            interval=lambda: self.settings.sync_progress_seconds,
            tail_lines=self.settings.sync_log_tail_lines,
        )
        self.informers: Caches = {}
        for ns in namespaces:
            self.informers[ns] = Informer(
                parts.kube,
                MODELSYNCS,
                self._on_modelsync,
                namespace=ns,
                timeout_seconds=self.settings.watch_timeout_seconds,
                backoff=backoff,
            )
            parts.informers.append(self.informers[ns])

    def items(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return cached_all(self.informers, namespace)

    def _on_modelsync(self, kind: str, obj: dict[str, Any]) -> None:
        ns, name = object_key(obj)
        key: Key = (KIND, ns, name)
        if kind == "DELETED":
            self.parts.refs.drop(key)
        else:
            self.parts.refs.set(key, ns, referenced_secrets(obj))
        self.parts.queue.add(key)
        for listener in self.listeners:
            listener(ns, name)

    def resync(self) -> None:
        for modelsync in self.items():
            self.parts.queue.add((KIND, *object_key(modelsync)))

    async def reconcile(self, ns: str, name: str) -> None:
        """Bring one ModelSync's Job and status in line with its spec and Secrets."""
        key: Key = (KIND, ns, name)
        modelsync = cached(self.informers, ns, name)
        if modelsync is None:
            self.parts.refs.drop(key)
            await self.jobs.delete(key, job_name(name))
            self.progress.forget(key)
            return
        if (modelsync.get("metadata") or {}).get("deletionTimestamp"):
            return
        names = referenced_secrets(modelsync)
        self.parts.refs.set(key, ns, names)
        secrets = await self.parts.refs.many(ns, names)
        plan = plan_modelsync_job(modelsync, secrets, self.settings)
        now = now_iso()
        if plan.error is not None or plan.job is None:
            assert plan.error is not None
            await self.parts.findings.report(key, modelsync, [("Warning", plan.error.reason, plan.error.message)])
            await self._write_status(modelsync, error_status(modelsync, plan.error, now))
            return
        self.parts.findings.forget(key)
        previous = modelsync.get("status") or {}
        if previous.get("phase") == "Succeeded" and previous.get("inputsHash"):
            self.jobs.succeeded[key] = previous["inputsHash"]  # survives controller restarts
        ensured = await self.jobs.ensure(key, modelsync, plan.job)
        if ensured is None:
            return  # finished and cleaned up; the status already says Succeeded
        if ensured.created:
            self.progress.forget(key)
        # Someone else's Job of that name: its phase is still what the ModelSync's owner sees.
        job = ensured.refused or ensured.obj
        pods = await self._pods(ns, job, previous)
        live = None
        if job is not None and job_phase(job) == "Running":
            running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
            newest = max(
                running, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""), default=None
            )
            live = await self.progress.read(key, ns, newest)
            self.parts.queue.add(key, self.settings.sync_progress_seconds)  # progress lives in a log, not a watch
        else:
            self.progress.forget(key)
        await self.jobs.phase_events(key, modelsync, job)
        await self._write_status(modelsync, job_status(modelsync, job, pods, now, live))

    async def _pods(self, ns: str, job: dict[str, Any] | None, previous: dict[str, Any]) -> list[dict[str, Any]]:
        """The Job's pods from the one Pod watch; at a Job's end, once, from the API if the watch is behind."""
        if job is None or job_phase(job) not in ("Succeeded", "Failed", "Running"):
            return []
        pods = self.parts.pods_of(ns, job["metadata"]["name"])
        finished = job_phase(job) in ("Succeeded", "Failed") and previous.get("phase") != job_phase(job)
        if finished and termination_summary(pods) is None:
            # The Job's watch can run ahead of the Pod's: at the transition, ask once for the final pod.
            pods, _ = await self.parts.kube.list(PODS, ns, label_selector=f"job-name={job['metadata']['name']}")
        return pods

    async def _write_status(self, modelsync: dict[str, Any], status: dict[str, Any]) -> None:
        ns, _ = object_key(modelsync)
        await patch_status(
            self.parts.kube, MODELSYNCS, modelsync, status, self.informers.get(ns) or self.informers.get(None)
        )
