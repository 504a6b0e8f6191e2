"""Secret mode's reconciler: a ``model-source`` Secret + its data connection -> ``plan_secret_job`` -> the Job.

The decisions are the pure :func:`modelferry.controller.sync.secretmode.plan_secret_job`; this adapter watches the
``model-source`` Secrets (by name, and by label), ensures the Job, and emits Events (a Secret has no status).
"""

from __future__ import annotations

from typing import Any

from modelferry.controller.kube.client import SECRETS
from modelferry.controller.kube.watch import Backoff, Informer, object_key
from modelferry.controller.reconcile.parts import Key, Parts
from modelferry.controller.sync.job_lifecycle import SyncJobs
from modelferry.controller.sync.secretmode import data_connection_name, is_model_source, plan_secret_job
from modelferry.controller.workload.secrets import is_true, secret_data

KIND = "Secret"
PASSCODE_SPENT = "; the one-time passcode is spent: put a fresh S3_SYNC_COS_TEMPORARY_PASSCODE into the Secret to retry"


class SecretModeReconciler:
    """Level-triggered reconcile of ``model-source`` Secrets into synchronize Jobs."""

    kind = KIND

    def __init__(self, parts: Parts, namespaces: list[str | None], backoff: Backoff) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.jobs = SyncJobs(parts, KIND)
        self.sources: dict[str | None, list[Informer]] = {}  # by name, and by label
        for ns in namespaces:
            common: dict[str, Any] = {
                "namespace": ns,
                "timeout_seconds": self.settings.watch_timeout_seconds,
                "backoff": backoff,
            }
            self.sources[ns] = [
                Informer(
                    parts.kube,
                    SECRETS,
                    self._on_source,
                    field_selector=f"metadata.name={self.settings.model_source_secret}",
                    **common,
                ),
                Informer(
                    parts.kube,
                    SECRETS,
                    self._on_source,
                    label_selector=self.settings.model_source_label,
                    keep=lambda obj: is_model_source(obj, self.settings),
                    **common,
                ),
            ]
            parts.informers += self.sources[ns]

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

    def _on_source(self, kind: str, obj: dict[str, Any]) -> None:
        ns, name = object_key(obj)
        key: Key = (KIND, ns, name)
        if kind == "DELETED" or self.model_source(ns, name) is None:
            self.parts.refs.drop(key)
        else:
            self.parts.refs.set(key, ns, [data_connection_name(secret_data(obj), self.settings)])
        self.parts.queue.add(key)

    def resync(self) -> None:
        for secret in self.model_sources():
            self.parts.queue.add((KIND, *object_key(secret)))

    async def reconcile(self, ns: str, name: str) -> None:
        """Bring one model-source Secret's Job in line with it and its data connection."""
        key: Key = (KIND, ns, name)
        secret = self.model_source(ns, name)
        if secret is None:
            self.parts.refs.drop(key)
            # Garbage collection removes owned Jobs too; deleting here covers clusters or emulators without it.
            await self.jobs.delete(key, self.settings.secret_job_name)
            return
        secret.setdefault("apiVersion", "v1")
        secret.setdefault("kind", "Secret")
        values = secret_data(secret)
        target_name = data_connection_name(values, self.settings)
        self.parts.refs.set(key, ns, [target_name])
        target = await self.parts.refs.get(ns, target_name)
        plan = plan_secret_job(secret, target, self.settings)
        findings = [("Warning", w.reason, w.message) for w in plan.warnings]
        if plan.error is not None:
            findings.append(("Warning", plan.error.reason, plan.error.message + "; no Job was created"))
        await self.parts.findings.report(key, secret, findings)
        if plan.error is not None or plan.job is None:
            return
        ensured = await self.jobs.ensure(key, secret, plan.job)
        # Someone else's Job of that name: its phase is still what the Secret's owner sees.
        job = None if ensured is None else (ensured.refused or ensured.obj)
        spent = (
            plan.mode == "cos"
            and is_true(values.get("S3_SYNC_USE_IBMCLOUD_CLI"))
            and values.get("S3_SYNC_COS_TEMPORARY_PASSCODE")
        )
        await self.jobs.phase_events(key, secret, job, PASSCODE_SPENT if spent else "")
