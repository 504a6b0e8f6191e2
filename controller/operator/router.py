"""The operator's adapters: watch events -> queue keys -> reconcile (pure decisions + a few API calls)."""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any

from controller.config.controller import ControllerSettings
from controller.kube.client import JOBS, MODELSYNCS, PODS, SECRETS, ConflictError, Kube
from controller.kube.events import EventRecorder, now_iso
from controller.kube.ownership import LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, MANAGED_BY, owned_by
from controller.kube.watch import Backoff, Informer, object_key
from controller.operator.nodeagent import NodeAgentReconciler
from controller.reconcile.log_progress import LogProgress
from controller.reconcile.secretindex import ReferencedSecrets
from controller.reconcile.status import patch_status
from controller.reconcile.workqueue import WorkQueue
from controller.serving.reconciler import ServingReconciler
from controller.serving.render import KIND as MODELSERVER
from controller.sync.job import CONTAINER as SYNC_CONTAINER
from controller.sync.modelsync import (
    error_status,
    job_name,
    job_status,
    plan_modelsync_job,
    referenced_secrets,
    termination_summary,
)
from controller.sync.secretmode import data_connection_name, is_model_source, plan_secret_job
from controller.training.facts import KIND as TRAININGRUN
from controller.training.reconciler import TrainingReconciler
from controller.workload.identity import recorded_hash
from controller.workload.jobstatus import job_condition, job_phase
from controller.workload.secrets import is_true, secret_data
from modelferry.transfer.progress import parse_progress_line

log = logging.getLogger(__name__)

SECRET = "Secret"  # noqa: S105 - a kind name, not a password
MODELSYNC = "ModelSync"
Key = tuple[str, str, str]  # (kind, namespace, name)


class Operator:
    """Holds the informers and the queue; :meth:`reconcile` is level-triggered and idempotent."""

    def __init__(self, kube: Kube, settings: ControllerSettings, recorder: EventRecorder | None = None) -> None:
        self.kube = kube
        self.settings = settings
        self.recorder = recorder or EventRecorder(kube)
        self.queue = WorkQueue(backoff_base=settings.backoff_base, backoff_max=settings.backoff_max)
        self.informers: list[Informer] = []
        self.sources: dict[str | None, list[Informer]] = {}  # model-source Secrets: by name, by label
        self.jobs: dict[str | None, Informer] = {}
        self.pods: dict[str | None, Informer] = {}
        self.modelsyncs: dict[str | None, Informer] = {}
        self._reported: dict[Key, tuple[str, ...]] = {}
        self._phases: dict[Key, str] = {}
        self._succeeded: dict[Key, str | None] = {}
        # Newest progress report per running ModelSync, from its sync container's log.
        self.progress = LogProgress(
            kube,
            SYNC_CONTAINER,
            parse_progress_line,
            interval=lambda: self.settings.sync_progress_seconds,
            tail_lines=settings.sync_log_tail_lines,
        )
        self.reconciles: dict[str, int] = {}
        namespaces: list[str | None] = list(settings.namespaces) or [None]
        backoff = Backoff(settings.watch_backoff_seconds, settings.watch_backoff_max_seconds)
        managed = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        for ns in namespaces:
            common: dict[str, Any] = {
                "namespace": ns,
                "timeout_seconds": settings.watch_timeout_seconds,
                "backoff": backoff,
            }
            self.sources[ns] = [
                Informer(
                    kube,
                    SECRETS,
                    self._on_source,
                    field_selector=f"metadata.name={settings.model_source_secret}",
                    **common,
                ),
                Informer(
                    kube,
                    SECRETS,
                    self._on_source,
                    label_selector=settings.model_source_label,
                    keep=lambda obj: is_model_source(obj, settings),
                    **common,
                ),
            ]
            self.jobs[ns] = Informer(kube, JOBS, self._on_job, label_selector=managed, **common)
            self.pods[ns] = Informer(kube, PODS, self._on_pod, label_selector=managed, **common)
            self.modelsyncs[ns] = Informer(kube, MODELSYNCS, self._on_modelsync, **common)
            self.informers += [*self.sources[ns], self.jobs[ns], self.pods[ns], self.modelsyncs[ns]]
        # Referenced Secrets are listed once the objects that name them are known (see runtime).
        self.refs = ReferencedSecrets(
            kube,
            namespaces,
            self._on_referenced,
            timeout_seconds=settings.watch_timeout_seconds,
            page_size=settings.secret_page_size,
            backoff=backoff,
        )
        self.dependent: list[Informer] = list(self.refs.informers.values())
        self.training = TrainingReconciler(self) if settings.training.enabled else None
        self.serving = ServingReconciler(self) if settings.serving.enabled else None
        self.node_agents = NodeAgentReconciler(self) if settings.node_agent.enabled else None

    # --- cache lookups ---------------------------------------------------------------------------
    def _cached(self, informers: dict[str | None, Informer], ns: str, name: str) -> dict[str, Any] | None:
        informer = informers.get(ns) or informers.get(None)
        return informer.get(ns, name) if informer else None

    def _all(self, informers: dict[str | None, Informer]) -> list[dict[str, Any]]:
        return [obj for inf in informers.values() for obj in inf.items()]

    def model_source(self, ns: str, name: str) -> dict[str, Any] | None:
        """A cached model-source Secret (named ``model-source``, or labelled as one)."""
        for informer in self.sources.get(ns) or self.sources.get(None) or []:
            obj = informer.get(ns, name)
            if obj is not None and is_model_source(obj, self.settings):
                return obj
        return None

    def model_sources(self) -> list[dict[str, Any]]:
        seen = {}
        for informers in self.sources.values():
            for informer in informers:
                for obj in informer.items():
                    if is_model_source(obj, self.settings):
                        seen[object_key(obj)] = obj
        return list(seen.values())

    async def data_connections(self, ns: str) -> dict[str, dict[str, Any]]:
        """The data connections named by the ModelSyncs of ``ns`` (indexed by them; a GET the first time only)."""
        names = {
            str(dc)
            for m in self._all(self.modelsyncs)
            if object_key(m)[0] == ns and (dc := ((m.get("spec") or {}).get("target") or {}).get("dataConnection"))
        }
        found = await self.refs.many(ns, names)
        return {n: s for n, s in found.items() if s is not None}

    def pods_of(self, ns: str, job: str) -> list[dict[str, Any]]:
        """The cached Pods of Job ``job`` (from the one label-selected Pod watch)."""
        informer = self.pods.get(ns) or self.pods.get(None)
        if informer is None:
            return []
        return [
            p
            for p in informer.items()
            if object_key(p)[0] == ns and ((p.get("metadata") or {}).get("labels") or {}).get("job-name") == job
        ]

    def remember_job(self, ns: str, job: dict[str, Any] | None) -> None:
        """Put a Job we just wrote into the cache (the watch event follows; a reconcile before it sees it)."""
        informer = self.jobs.get(ns) or self.jobs.get(None)
        if informer is not None and job and job.get("metadata"):
            job.setdefault("apiVersion", JOBS.api_version)
            job.setdefault("kind", JOBS.kind)
            informer.cache[object_key(job)] = job

    def forget_job(self, ns: str, name: str) -> None:
        informer = self.jobs.get(ns) or self.jobs.get(None)
        if informer is not None:
            informer.cache.pop((ns, name), None)

    # --- event handlers: map every change to the keys it affects -----------------------------------
    def _on_source(self, kind: str, obj: dict[str, Any]) -> None:
        ns, name = object_key(obj)
        key: Key = (SECRET, ns, name)
        if kind == "DELETED" or self.model_source(ns, name) is None:
            self.refs.drop(key)
        else:
            self.refs.set(key, ns, [data_connection_name(secret_data(obj), self.settings)])
        self.queue.add(key)

    def _on_referenced(self, ns: str, name: str) -> None:
        """A data connection or credentials Secret changed: requeue exactly the objects that read it."""
        for key in self.refs.index.readers(ns, name):
            self.queue.add(key)

    def _on_job(self, kind: str, obj: dict[str, Any]) -> None:
        ns, _ = object_key(obj)
        labels = (obj.get("metadata") or {}).get("labels") or {}
        owner_kind, owner_name = labels.get(LABEL_OWNER_KIND), labels.get(LABEL_OWNER_NAME)
        if owner_kind in (SECRET, MODELSYNC) and owner_name:
            self.queue.add((owner_kind, ns, owner_name))
        elif owner_kind == TRAININGRUN and self.training is not None:
            self.training.on_job(obj)

    def _on_pod(self, kind: str, obj: dict[str, Any]) -> None:
        ns, _ = object_key(obj)
        labels = (obj.get("metadata") or {}).get("labels") or {}
        owner_kind, owner_name = labels.get(LABEL_OWNER_KIND), labels.get(LABEL_OWNER_NAME)
        if owner_kind == MODELSYNC and owner_name:
            self.queue.add((MODELSYNC, ns, owner_name))
        elif owner_kind == TRAININGRUN and self.training is not None:
            self.training.on_job(obj)

    def _on_modelsync(self, kind: str, obj: dict[str, Any]) -> None:
        ns, name = object_key(obj)
        key: Key = (MODELSYNC, ns, name)
        if kind == "DELETED":
            self.refs.drop(key)
        else:
            self.refs.set(key, ns, referenced_secrets(obj))
        self.queue.add(key)
        if self.training is not None:
            self.training.on_modelsync(ns, name)

    def resync(self) -> None:
        """Queue every known object (level triggering catches anything a watch missed)."""
        for secret in self.model_sources():
            self.queue.add((SECRET, *object_key(secret)))
        for ms in self._all(self.modelsyncs):
            self.queue.add((MODELSYNC, *object_key(ms)))
        if self.training is not None:
            self.training.resync()
        if self.serving is not None:
            self.serving.resync()
        if self.node_agents is not None:
            self.node_agents.resync()

    # --- reconcile ---------------------------------------------------------------------------------
    async def reconcile(self, key: Hashable) -> None:
        """Bring one object's Job and status in line with its inputs."""
        if not (isinstance(key, tuple) and len(key) == 3):
            return
        kind, ns, name = (str(part) for part in key)
        if kind == SECRET:
            await self.reconcile_secret(ns, name)
        elif kind == MODELSYNC:
            await self.reconcile_modelsync(ns, name)
        elif kind == TRAININGRUN and self.training is not None:
            await self.training.reconcile(ns, name)
        elif kind == MODELSERVER and self.serving is not None:
            await self.serving.reconcile(ns, name)
        elif kind == "NodeAgent" and self.node_agents is not None:
            await self.node_agents.reconcile(name)

    async def _report(self, key: Key, obj: dict[str, Any], findings: list[tuple[str, str, str]]) -> None:
        """Emit Events for findings that changed since the last reconcile (not once per resync)."""
        signature = tuple(f"{t}/{r}/{m}" for t, r, m in findings)
        if self._reported.get(key) == signature:
            return
        self._reported[key] = signature
        for event_type, reason, message in findings:
            log.info("%s %s/%s: %s: %s", key[0], key[1], key[2], reason, message)
            await self.recorder.emit(obj, event_type, reason, message)

    async def _ensure_job(self, key: Key, owner: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any] | None:
        """Create the Job, or replace it when its inputs hash differs; returns the live Job."""
        kind, ns, owner_name = key
        name = desired["metadata"]["name"]
        live = self._cached(self.jobs, ns, name)  # a stale miss costs a 409 and a requeue, never a duplicate
        if live is not None and recorded_hash(live) == recorded_hash(desired):
            return live
        if live is None and self._succeeded.get(key) == recorded_hash(desired):
            # It already succeeded with these inputs and was cleaned up (ttlSecondsAfterFinished): never re-run.
            return None
        if live is not None:
            if not owned_by(live, kind, owner_name):
                await self._report(
                    key,
                    owner,
                    [("Warning", "JobNotManaged", f"Job {name!r} exists and was not created by modelferry; delete it")],
                )
                return live
            log.info("inputs of %s %s/%s changed: replacing Job %s", kind, ns, owner_name, name)
            await self.kube.delete(JOBS, ns, name)
            self.forget_job(ns, name)
            await self.recorder.emit(owner, "Normal", "JobReplaced", f"inputs changed; Job {name} replaced")
        try:
            created = await self.kube.create(JOBS, ns, desired)
        except ConflictError:
            # The Job cache holds only managed Jobs: a conflict is someone else's Job, or ours being deleted.
            other = await self.kube.get(JOBS, ns, name)
            if other is not None and not owned_by(other, kind, owner_name):
                message = f"Job {name!r} exists and was not created by modelferry; delete it"
                await self._report(key, owner, [("Warning", "JobNotManaged", message)])
                return other
            self.queue.add(key, 1.0)
            return None
        self.remember_job(ns, created)
        self._phases.pop(key, None)
        self.progress.forget(key)
        await self.recorder.emit(owner, "Normal", "JobCreated", f"created Job {name}")
        return created

    async def _delete_owned(self, key: Key, name: str) -> None:
        kind, ns, owner_name = key
        live = self._cached(self.jobs, ns, name)
        if live is not None and owned_by(live, kind, owner_name):
            log.info("%s %s/%s is gone: deleting Job %s", kind, ns, owner_name, name)
            await self.kube.delete(JOBS, ns, name)
            self.forget_job(ns, name)
        self._reported.pop(key, None)
        self._phases.pop(key, None)
        self._succeeded.pop(key, None)
        self.progress.forget(key)

    async def _job_events(self, key: Key, owner: dict[str, Any], job: dict[str, Any] | None, hint: str = "") -> None:
        phase = job_phase(job)
        if self._phases.get(key) == phase:
            return
        self._phases[key] = phase
        if phase == "Succeeded":
            self._succeeded[key] = recorded_hash(job)
            await self.recorder.emit(owner, "Normal", "SyncSucceeded", "the synchronize Job completed")
        elif phase == "Failed":
            cond = job_condition(job, "Failed") or {}
            message = f"the synchronize Job failed: {cond.get('reason', 'JobFailed')} {cond.get('message', '')}".strip()
            await self.recorder.emit(owner, "Warning", "SyncFailed", message + hint)

    async def reconcile_secret(self, ns: str, name: str) -> None:
        key: Key = (SECRET, ns, name)
        self.reconciles[SECRET] = self.reconciles.get(SECRET, 0) + 1
        secret = self.model_source(ns, name)
        if secret is None:
            self.refs.drop(key)
            # Garbage collection removes owned Jobs too; deleting here covers clusters or emulators without it.
            await self._delete_owned(key, self.settings.secret_job_name)
            return
        secret.setdefault("apiVersion", "v1")
        secret.setdefault("kind", "Secret")
        values = secret_data(secret)
        dest_name = data_connection_name(values, self.settings)
        self.refs.set(key, ns, [dest_name])
        dest = await self.refs.get(ns, dest_name)
        plan = plan_secret_job(secret, dest, self.settings)
        findings = [("Warning", w.reason, w.message) for w in plan.warnings]
        if plan.error is not None or plan.job is None:
            if plan.error is not None:
                findings.append(("Warning", plan.error.reason, plan.error.message + "; no Job was created"))
            await self._report(key, secret, findings)
            return
        await self._report(key, secret, findings)
        job = await self._ensure_job(key, secret, plan.job)
        hint = ""
        if (
            plan.mode == "cos"
            and is_true(values.get("S3_SYNC_USE_IBMCLOUD_CLI"))
            and values.get("S3_SYNC_COS_TEMPORARY_PASSCODE")
        ):
            hint = (
                "; the one-time passcode is spent: put a fresh S3_SYNC_COS_TEMPORARY_PASSCODE into the Secret to retry"
            )
        await self._job_events(key, secret, job, hint)

    async def reconcile_modelsync(self, ns: str, name: str) -> None:
        key: Key = (MODELSYNC, ns, name)
        self.reconciles[MODELSYNC] = self.reconciles.get(MODELSYNC, 0) + 1
        ms = self._cached(self.modelsyncs, ns, name)
        if ms is None:
            self.refs.drop(key)
            await self._delete_owned(key, job_name(name))
            return
        if (ms.get("metadata") or {}).get("deletionTimestamp"):
            return
        names = referenced_secrets(ms)
        self.refs.set(key, ns, names)
        secrets = await self.refs.many(ns, names)
        plan = plan_modelsync_job(ms, secrets, self.settings)
        now = now_iso()
        if plan.error is not None or plan.job is None:
            assert plan.error is not None
            status = error_status(ms, plan.error, now)
            await self._report(key, ms, [("Warning", plan.error.reason, plan.error.message)])
            await self._write_status(ms, status)
            return
        self._reported.pop(key, None)
        previous = ms.get("status") or {}
        if previous.get("phase") == "Succeeded" and previous.get("inputsHash"):
            self._succeeded[key] = previous["inputsHash"]  # survives controller restarts
        job = await self._ensure_job(key, ms, plan.job)
        if job is None and self._succeeded.get(key) == recorded_hash(plan.job):
            return  # finished and cleaned up; the status already says Succeeded
        pods: list[dict[str, Any]] = []
        if job is not None and job_phase(job) in ("Succeeded", "Failed", "Running"):
            pods = self.pods_of(ns, job["metadata"]["name"])
            finished = job_phase(job) in ("Succeeded", "Failed") and previous.get("phase") != job_phase(job)
            if finished and termination_summary(pods) is None:
                # The Job's watch can run ahead of the Pod's: at the transition, ask once for the final pod.
                pods, _ = await self.kube.list(PODS, ns, label_selector=f"job-name={job['metadata']['name']}")
        live = None
        if job is not None and job_phase(job) == "Running":
            running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
            newest = max(
                running, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""), default=None
            )
            live = await self.progress.read(key, ns, newest)
            self.queue.add(key, self.settings.sync_progress_seconds)  # progress lives in a log, not in a watch
        else:
            self.progress.forget(key)
        await self._job_events(key, ms, job)
        await self._write_status(ms, job_status(ms, job, pods, now, live))

    async def _write_status(self, ms: dict[str, Any], status: dict[str, Any]) -> None:
        ns, _ = object_key(ms)
        await patch_status(self.kube, MODELSYNCS, ms, status, self.modelsyncs.get(ns) or self.modelsyncs.get(None))
