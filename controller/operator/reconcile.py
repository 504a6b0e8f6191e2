"""The operator's adapters: watch events -> queue keys -> reconcile (pure decisions + a few API calls)."""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable
from typing import Any

from controller.kube.client import JOBS, MODELSYNCS, PODS, SECRETS, ConflictError, Kube
from controller.kube.events import EventRecorder, now_iso
from controller.kube.watch import Informer, object_key
from controller.operator.jobs import CONTAINER as SYNC_CONTAINER
from controller.operator.jobs import (
    LABEL_MANAGED_BY,
    LABEL_OWNER_KIND,
    LABEL_OWNER_NAME,
    MANAGED_BY,
    is_true,
    job_condition,
    job_hash,
    job_phase,
    secret_data,
)
from controller.operator.modelsync import (
    error_status,
    job_name,
    job_status,
    plan_modelsync_job,
    referenced_secrets,
)
from controller.operator.nodeagent import NodeAgentReconciler
from controller.operator.secretmode import data_connection_name, is_model_source, plan_secret_job
from controller.operator.settings import ControllerSettings
from controller.operator.training import KIND as TRAININGRUN
from controller.operator.training import TrainingReconciler
from controller.operator.workqueue import WorkQueue
from controller.serving.reconciler import ServingReconciler
from controller.serving.render import KIND as MODELSERVER
from modelferry.errors import ModelferryError
from modelferry.transfer.progress import parse_progress_line

log = logging.getLogger(__name__)

SECRET = "Secret"  # noqa: S105 - a kind name, not a password
MODELSYNC = "ModelSync"
Key = tuple[str, str, str]  # (kind, namespace, name)


def owned_by(job: dict[str, Any] | None, kind: str, name: str) -> bool:
    """Whether a Job was created by this controller for ``kind``/``name`` (never touch anyone else's)."""
    labels = ((job or {}).get("metadata") or {}).get("labels") or {}
    return (
        labels.get(LABEL_MANAGED_BY) == MANAGED_BY
        and labels.get(LABEL_OWNER_KIND) == kind
        and labels.get(LABEL_OWNER_NAME) == name
    )


def status_changed(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether writing ``desired`` would change anything (avoids a status write per resync)."""
    return any(current.get(k) != v for k, v in desired.items()) or any(
        k not in desired for k in ("jobName",) if current.get(k) is not None
    )


class Operator:
    """Holds the informers and the queue; :meth:`reconcile` is level-triggered and idempotent."""

    def __init__(self, kube: Kube, settings: ControllerSettings, recorder: EventRecorder | None = None) -> None:
        self.kube = kube
        self.settings = settings
        self.recorder = recorder or EventRecorder(kube)
        self.queue = WorkQueue(backoff_base=settings.backoff_base, backoff_max=settings.backoff_max)
        self.informers: list[Informer] = []
        self.secrets: dict[str | None, Informer] = {}
        self.jobs: dict[str | None, Informer] = {}
        self.modelsyncs: dict[str | None, Informer] = {}
        self._reported: dict[Key, tuple[str, ...]] = {}
        self._phases: dict[Key, str] = {}
        self._succeeded: dict[Key, str | None] = {}
        # Newest progress report per running ModelSync and when its log was read (monotonic seconds).
        self._live: dict[Key, tuple[float, dict[str, Any] | None]] = {}
        self.reconciles: dict[str, int] = {}
        namespaces: list[str | None] = list(settings.namespaces) or [None]
        for ns in namespaces:
            common: dict[str, Any] = {"namespace": ns, "timeout_seconds": settings.watch_timeout_seconds}
            self.secrets[ns] = Informer(kube, SECRETS, self._on_secret, **common)
            self.jobs[ns] = Informer(
                kube, JOBS, self._on_job, label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}", **common
            )
            self.modelsyncs[ns] = Informer(kube, MODELSYNCS, self._on_modelsync, **common)
            self.informers += [self.secrets[ns], self.jobs[ns], self.modelsyncs[ns]]
        self.training = TrainingReconciler(self) if settings.training.enabled else None
        self.serving = ServingReconciler(self) if settings.serving.enabled else None
        self.node_agents = NodeAgentReconciler(self) if settings.node_agent.enabled else None

    # --- cache lookups ---------------------------------------------------------------------------
    def _cached(self, informers: dict[str | None, Informer], ns: str, name: str) -> dict[str, Any] | None:
        informer = informers.get(ns) or informers.get(None)
        return informer.get(ns, name) if informer else None

    def _all(self, informers: dict[str | None, Informer]) -> list[dict[str, Any]]:
        return [obj for inf in informers.values() for obj in inf.items()]

    # --- event handlers: map every change to the keys it affects -----------------------------------
    def _on_secret(self, kind: str, obj: dict[str, Any]) -> None:
        ns, name = object_key(obj)
        if is_model_source(obj, self.settings) or kind == "DELETED":
            self.queue.add((SECRET, ns, name))
        # A data connection or credentials Secret changed: requeue whoever reads it.
        for other in self._all(self.secrets):
            o_ns, o_name = object_key(other)
            if (
                o_ns == ns
                and o_name != name
                and is_model_source(other, self.settings)
                and data_connection_name(secret_data(other), self.settings) == name
            ):
                self.queue.add((SECRET, ns, o_name))
        for ms in self._all(self.modelsyncs):
            m_ns, m_name = object_key(ms)
            if m_ns == ns and name in referenced_secrets(ms):
                self.queue.add((MODELSYNC, ns, m_name))

    def _on_job(self, kind: str, obj: dict[str, Any]) -> None:
        ns, _ = object_key(obj)
        labels = (obj.get("metadata") or {}).get("labels") or {}
        owner_kind, owner_name = labels.get(LABEL_OWNER_KIND), labels.get(LABEL_OWNER_NAME)
        if owner_kind in (SECRET, MODELSYNC) and owner_name:
            self.queue.add((owner_kind, ns, owner_name))
        elif owner_kind == TRAININGRUN and self.training is not None:
            self.training.on_job(obj)

    def _on_modelsync(self, kind: str, obj: dict[str, Any]) -> None:
        ns, name = object_key(obj)
        self.queue.add((MODELSYNC, ns, name))
        if self.training is not None:
            self.training.on_modelsync(ns, name)

    def resync(self) -> None:
        """Queue every known object (level triggering catches anything a watch missed)."""
        for secret in self._all(self.secrets):
            if is_model_source(secret, self.settings):
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
        live = await self.kube.get(JOBS, ns, name)
        if live is not None and job_hash(live) == job_hash(desired):
            return live
        if live is None and self._succeeded.get(key) == job_hash(desired):
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
            await self.recorder.emit(owner, "Normal", "JobReplaced", f"inputs changed; Job {name} replaced")
        try:
            created = await self.kube.create(JOBS, ns, desired)
        except ConflictError:
            self.queue.add(key, 1.0)  # the old Job is still being deleted
            return None
        self._phases.pop(key, None)
        self._live.pop(key, None)
        await self.recorder.emit(owner, "Normal", "JobCreated", f"created Job {name}")
        return created

    async def _delete_owned(self, key: Key, name: str) -> None:
        kind, ns, owner_name = key
        live = await self.kube.get(JOBS, ns, name)
        if live is not None and owned_by(live, kind, owner_name):
            log.info("%s %s/%s is gone: deleting Job %s", kind, ns, owner_name, name)
            await self.kube.delete(JOBS, ns, name)
        self._reported.pop(key, None)
        self._phases.pop(key, None)
        self._succeeded.pop(key, None)
        self._live.pop(key, None)

    async def _job_events(self, key: Key, owner: dict[str, Any], job: dict[str, Any] | None, hint: str = "") -> None:
        phase = job_phase(job)
        if self._phases.get(key) == phase:
            return
        self._phases[key] = phase
        if phase == "Succeeded":
            self._succeeded[key] = job_hash(job)
            await self.recorder.emit(owner, "Normal", "SyncSucceeded", "the synchronize Job completed")
        elif phase == "Failed":
            cond = job_condition(job, "Failed") or {}
            message = f"the synchronize Job failed: {cond.get('reason', 'JobFailed')} {cond.get('message', '')}".strip()
            await self.recorder.emit(owner, "Warning", "SyncFailed", message + hint)

    async def reconcile_secret(self, ns: str, name: str) -> None:
        key: Key = (SECRET, ns, name)
        self.reconciles[SECRET] = self.reconciles.get(SECRET, 0) + 1
        secret = self._cached(self.secrets, ns, name)
        if secret is None or not is_model_source(secret, self.settings):
            # Garbage collection removes owned Jobs too; deleting here covers clusters or emulators without it.
            await self._delete_owned(key, self.settings.secret_job_name)
            return
        secret.setdefault("apiVersion", "v1")
        secret.setdefault("kind", "Secret")
        values = secret_data(secret)
        dest = self._cached(self.secrets, ns, data_connection_name(values, self.settings))
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
            await self._delete_owned(key, job_name(name))
            return
        if (ms.get("metadata") or {}).get("deletionTimestamp"):
            return
        secrets = {n: self._cached(self.secrets, ns, n) for n in referenced_secrets(ms)}
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
        if job is None and self._succeeded.get(key) == job_hash(plan.job):
            return  # finished and cleaned up; the status already says Succeeded
        pods: list[dict[str, Any]] = []
        if job is not None and job_phase(job) in ("Succeeded", "Failed", "Running"):
            pods, _ = await self.kube.list(PODS, ns, label_selector=f"job-name={job['metadata']['name']}")
        live = None
        if job is not None and job_phase(job) == "Running":
            live = await self._live_progress(key, ns, pods)
            self.queue.add(key, self.settings.sync_progress_seconds)  # progress lives in a log, not in a watch
        else:
            self._live.pop(key, None)
        await self._job_events(key, ms, job)
        await self._write_status(ms, job_status(ms, job, pods, now, live))

    async def _live_progress(self, key: Key, ns: str, pods: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The sync container's newest progress line, read at most every ``sync_progress_seconds`` per object."""
        at = time.monotonic()
        cached = self._live.get(key)
        if cached is not None and at - cached[0] < self.settings.sync_progress_seconds:
            return cached[1]
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        if not running:
            return cached[1] if cached else None
        pod = max(running, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
        try:
            text = await self.kube.pod_log(
                ns, pod["metadata"]["name"], SYNC_CONTAINER, tail_lines=self.settings.sync_log_tail_lines
            )
        except ModelferryError as exc:
            # Progress is a nicety: a missing pods/log permission must not stop status updates.
            log.warning("cannot read the log of pod %s/%s for progress: %s", ns, pod["metadata"]["name"], exc)
            text = ""
        report = parse_progress_line(text) or (cached[1] if cached else None)
        self._live[key] = (at, report)
        return report

    async def _write_status(self, ms: dict[str, Any], status: dict[str, Any]) -> None:
        current = ms.get("status") or {}
        if not status_changed(current, status):
            return
        ns, name = object_key(ms)
        body = {"status": {**{k: None for k in current if k not in status}, **status}}
        updated = await self.kube.patch(MODELSYNCS, ns, name, body, sub="status")
        # Keep the cache current so a reconcile queued before the watch event does not write it again.
        informer = self.modelsyncs.get(ns) or self.modelsyncs.get(None)
        if informer is not None and updated.get("metadata"):
            updated.setdefault("apiVersion", ms.get("apiVersion"))
            updated.setdefault("kind", ms.get("kind"))
            informer.cache[(ns, name)] = updated
