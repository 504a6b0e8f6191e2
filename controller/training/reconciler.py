"""The TrainingRun reconciler: TrainingRun + ModelSyncs -> ``render`` -> Job/Service/PyTorchJob/TrainJob -> status.

The decisions are the pure functions of :mod:`modelferry.controller.training` (render, compute_status) and the
small pure helpers here; :class:`TrainingReconciler` only reads caches, talks to the API and writes
status. It is registered by :class:`modelferry.controller.operator.router.Operator`, shares its work queue,
Event recorder and Job informer, and adds informers of its own (TrainingRuns, Services, and
PyTorchJobs and TrainJobs when they are known to be served).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from modelferry.controller.kube.client import JOBS, PODS, SERVICES, TRAININGRUNS, Resource
from modelferry.controller.kube.events import now_iso
from modelferry.controller.kube.ownership import LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, MANAGED_BY
from modelferry.controller.kube.watch import Backoff, Informer, object_key
from modelferry.controller.reconcile.log_progress import LogProgress
from modelferry.controller.reconcile.owned import OwnedObjects
from modelferry.controller.reconcile.parts import Key, Parts
from modelferry.controller.reconcile.status import patch_status
from modelferry.controller.sync.targets import synced_models
from modelferry.controller.training import (
    RenderContext,
    compute_status,
    progress_from_log,
    render,
    termination_report,
    workload_name,
)
from modelferry.controller.training.facts import KIND, failure_report, modelsync_ref, rank_zero_pod
from modelferry.controller.training.trainjob import JOBSET_NAME_LABEL, TRAINER_GROUP, TRAINER_VERSION
from modelferry.controller.workload.cabundle import ca_source

log = logging.getLogger(__name__)

PYTORCHJOBS = Resource("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")
TRAINJOBS = Resource(TRAINER_GROUP, TRAINER_VERSION, "trainjobs", "TrainJob")
TRAININGRUNTIMES = Resource(TRAINER_GROUP, TRAINER_VERSION, "trainingruntimes", "TrainingRuntime")
RESOURCES = {r.kind: r for r in (JOBS, PYTORCHJOBS, TRAINJOBS, SERVICES, TRAININGRUNTIMES)}
POD_SELECTORS = {"Job": "job-name", "PyTorchJob": "training.kubeflow.org/job-name", "TrainJob": JOBSET_NAME_LABEL}


class TrainingReconciler:
    """Level-triggered reconcile of TrainingRuns."""

    kind = KIND

    def __init__(self, op: Parts) -> None:
        self.op = op
        self.kube = op.kube
        self.settings = op.settings.training
        self.owned = OwnedObjects(op, KIND, self._caches)
        self.runs: dict[str | None, Informer] = {}
        self.services: dict[str | None, Informer] = {}
        self.pytorchjobs: dict[str | None, Informer] = {}
        self.trainjobs: dict[str | None, Informer] = {}
        self._phases: dict[Key, str] = {}
        # the sidecar's newest progress line per running TrainingRun
        self.progress = LogProgress(
            self.kube,
            "sidecar",
            progress_from_log,
            interval=lambda: self.settings.progress_seconds,
            tail_lines=self.settings.log_tail_lines,
        )
        self._served: dict[Resource, tuple[bool, float]] = {}
        owned_selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_OWNER_KIND}={KIND}"
        namespaces: list[str | None] = list(op.settings.namespaces) or [None]
        for ns in namespaces:
            common: dict[str, Any] = {
                "namespace": ns,
                "timeout_seconds": op.settings.watch_timeout_seconds,
                "backoff": Backoff(op.settings.watch_backoff_seconds, op.settings.watch_backoff_max_seconds),
            }
            self.runs[ns] = Informer(self.kube, TRAININGRUNS, self._on_run, **common)
            self.services[ns] = Informer(self.kube, SERVICES, self._on_owned, label_selector=owned_selector, **common)
            op.informers += [self.runs[ns], self.services[ns]]
            if self.settings.pytorchjob:  # only when known to be served: an unserved one never syncs
                self.pytorchjobs[ns] = Informer(
                    self.kube, PYTORCHJOBS, self._on_owned, label_selector=owned_selector, **common
                )
                op.informers.append(self.pytorchjobs[ns])
            if self.settings.trainjob:
                self.trainjobs[ns] = Informer(
                    self.kube, TRAINJOBS, self._on_owned, label_selector=owned_selector, **common
                )
                op.informers.append(self.trainjobs[ns])

    # --- event handlers ----------------------------------------------------------------------------
    def _on_run(self, kind: str, obj: dict[str, Any]) -> None:
        self.op.queue.add((KIND, *object_key(obj)))

    def _on_owned(self, kind: str, obj: dict[str, Any]) -> None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_OWNER_KIND) == KIND and labels.get(LABEL_OWNER_NAME):
            self.op.queue.add((KIND, object_key(obj)[0], labels[LABEL_OWNER_NAME]))

    def on_modelsync(self, ns: str, name: str) -> None:
        """A ModelSync changed: requeue the TrainingRuns that take their base model from it."""
        for run in self._items(ns):
            if modelsync_ref(run) == name:
                self.op.queue.add((KIND, *object_key(run)))

    def resync(self) -> None:
        for inf in self.runs.values():
            for run in inf.items():
                self.op.queue.add((KIND, *object_key(run)))

    def _items(self, ns: str) -> list[dict[str, Any]]:
        inf = self.runs.get(ns) or self.runs.get(None)
        return [o for o in (inf.items() if inf else []) if object_key(o)[0] == ns]

    # --- inputs --------------------------------------------------------------------------------------
    async def has_pytorchjob(self) -> bool:
        """The setting, else API discovery (re-asked every resync period: the CRD may be installed later)."""
        return await self._has(PYTORCHJOBS, self.settings.pytorchjob)

    async def has_trainjob(self) -> bool:
        """Kubeflow Trainer v2: the setting, else API discovery (as for PyTorchJobs)."""
        return await self._has(TRAINJOBS, self.settings.trainjob)

    async def _has(self, resource: Resource, setting: bool | None) -> bool:
        if setting is not None:
            return setting
        now = time.monotonic()
        seen = self._served.get(resource)
        if seen is None or now - seen[1] > self.op.settings.resync_seconds:
            seen = self._served[resource] = (await self.kube.served(resource), now)
        return seen[0]

    async def _context(self, ns: str, pytorchjob: bool, trainjob: bool) -> RenderContext:
        modelsyncs = self.op.modelsyncs(ns)
        secrets = await self.op.data_connections(ns)
        job = self.op.settings.job
        return RenderContext(
            sidecar_image=self.settings.sidecar_image or self.op.settings.job.image,
            train_image=self.settings.train_image,
            has_pytorchjob=pytorchjob,
            has_trainjob=trainjob,
            model_syncs=synced_models(modelsyncs, secrets),
            service_account_name=self.settings.service_account_name,
            ca=ca_source(job.ca_configmap, tuple(job.ca_configmap_keys), platform=job.platform_ca),
            allowed_local_roots=tuple(self.op.settings.allowed_local_roots),
        )

    # --- reconcile -----------------------------------------------------------------------------------
    async def reconcile(self, ns: str, name: str) -> None:
        """Bring one TrainingRun's workload and status in line with its spec."""
        key: Key = (KIND, ns, name)
        inf = self.runs.get(ns) or self.runs.get(None)
        run = inf.get(ns, name) if inf else None
        if run is None:
            await self._delete_owned(ns, name, keep=())
            self._phases.pop(key, None)
            self.progress.forget(key)
            self.op.findings.forget(key)
            return
        if (run.get("metadata") or {}).get("deletionTimestamp"):
            return
        run.setdefault("apiVersion", TRAININGRUNS.api_version)
        run.setdefault("kind", KIND)
        result = render(run, await self._context(ns, await self.has_pytorchjob(), await self.has_trainjob()))
        now = now_iso()
        if result.problem is not None:
            problem = result.problem
            await self._delete_owned(ns, name, keep=())  # bad inputs: nothing should run
            await self.op.findings.report(
                key, run, [("Warning", problem.reason, problem.message + "; no Job was created")]
            )
            await self._write_status(run, compute_status(run, None, problem=problem, now=now))
            return
        self.op.findings.forget(key)
        resource = RESOURCES[result.kind]
        desired, extras = result.objects[0], result.objects[1:]
        await self._delete_owned(ns, name, keep=(resource, *(RESOURCES[extra["kind"]] for extra in extras)))
        old = run.get("status") or {}
        wname = desired["metadata"]["name"]
        live = await self._lookup(resource, ns, wname)
        if (
            live is None
            and old.get("phase") == "Succeeded"
            and old.get("observedGeneration") == (run.get("metadata") or {}).get("generation")
        ):
            return  # finished and its workload removed by someone: a succeeded run is never re-run
        for extra in extras:  # first: a TrainJob is refused while its TrainingRuntime does not exist
            extra_resource = RESOURCES[extra["kind"]]
            extra_live = await self._lookup(extra_resource, ns, extra["metadata"]["name"])
            await self._ensure(key, run, extra_resource, extra, extra_live)
        workload = await self._ensure(key, run, resource, desired, live)
        status = compute_status(run, workload, now=now)
        settled = old.get("phase") == status["phase"]
        report = await self._report_of(key, result.kind, workload, status["phase"], settled=settled)
        if report:
            status = compute_status(run, workload, report=report, now=now)
        watched = {"Job": True, "PyTorchJob": bool(self.pytorchjobs), "TrainJob": bool(self.trainjobs)}
        unwatched = not watched[result.kind]  # discovered, so no informer on it
        if status["phase"] == "Running" or (unwatched and status["phase"] == "Pending"):
            self.op.queue.add(key, self.settings.progress_seconds)  # progress lives in a log, not in a watch
        await self._phase_events(key, run, status)
        await self._write_status(run, status)

    async def _report_of(
        self, key: Key, kind: str, workload: dict[str, Any] | None, phase: str, *, settled: bool = True
    ) -> dict[str, Any] | None:
        """The sidecar's report: its termination message at the end, its newest progress line while running.

        The log is read only while the pod is Running, and at most every ``progress_seconds`` per run
        (pod events requeue the run far more often than that).
        """
        ns = key[1]
        if phase != "Running":
            self.progress.forget(key)
        if workload is None or phase == "Pending":
            return None
        wname = workload["metadata"]["name"]
        if kind == "Job":
            pods = self.op.pods_of(ns, wname)  # the operator's one Pod watch
        else:  # a PyTorchJob's or TrainJob's pods do not carry our labels: ask for them
            pods, _ = await self.kube.list(PODS, ns, label_selector=f"{POD_SELECTORS[kind]}={wname}")
        pod = rank_zero_pod(pods)
        if phase in ("Succeeded", "Failed"):
            report = termination_report(pod)
            if report is None and kind == "Job" and not settled:
                # The Job's watch can run ahead of the Pod's: at the transition, ask once for the final pod.
                pods, _ = await self.kube.list(PODS, ns, label_selector=f"{POD_SELECTORS[kind]}={wname}")
                report = termination_report(rank_zero_pod(pods))
            return report if report else (failure_report(workload) if phase == "Failed" else None)
        return await self.progress.read(key, ns, pod)

    async def _ensure(
        self, key: Key, owner: dict[str, Any], resource: Resource, desired: dict[str, Any], live: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        ensured = await self.owned.ensure(key, owner, resource, desired, live)
        if ensured.created:
            self._phases.pop(key, None)
        return ensured.obj

    async def _delete_owned(self, ns: str, run_name: str, keep: tuple[Resource, ...]) -> None:
        """Delete this run's objects of every kind not in ``keep`` (garbage collection may be absent or slow)."""
        name = workload_name(run_name)
        for resource in (JOBS, PYTORCHJOBS, TRAINJOBS, TRAININGRUNTIMES, SERVICES):
            if resource in keep or not await self._possible(resource):
                continue
            await self.owned.delete(resource, run_name, await self._lookup(resource, ns, name))

    def _caches(self) -> dict[Resource, dict[str | None, Informer]]:
        return {JOBS: self.op.jobs, SERVICES: self.services, PYTORCHJOBS: self.pytorchjobs, TRAINJOBS: self.trainjobs}

    async def _lookup(self, resource: Resource, ns: str, name: str) -> dict[str, Any] | None:
        return await self.owned.lookup(resource, ns, name)

    async def _possible(self, resource: Resource) -> bool:
        """Whether this run may own objects of ``resource`` (an API that is not served holds none)."""
        if resource is PYTORCHJOBS:
            return await self.has_pytorchjob()
        if resource in (TRAINJOBS, TRAININGRUNTIMES):
            return await self.has_trainjob()
        return True

    async def _phase_events(self, key: Key, run: dict[str, Any], status: dict[str, Any]) -> None:
        phase = status["phase"]
        if self._phases.get(key) == phase:
            return
        self._phases[key] = phase
        complete: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Complete"), {})
        if phase == "Succeeded":
            where = f"; output at {status['outputUri']}" if status.get("outputUri") else ""
            await self.op.recorder.emit(run, "Normal", "TrainingSucceeded", "training finished" + where)
        elif phase == "Failed":
            message = f"{complete.get('reason', 'TrainingFailed')}: {complete.get('message', '')}".rstrip(": ")
            await self.op.recorder.emit(run, "Warning", "TrainingFailed", message)

    async def _write_status(self, run: dict[str, Any], status: dict[str, Any]) -> None:
        ns, _ = object_key(run)
        await patch_status(self.kube, TRAININGRUNS, run, status, self.runs.get(ns) or self.runs.get(None))
