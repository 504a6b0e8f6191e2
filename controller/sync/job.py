"""Pure rendering of synchronize Jobs: plain dicts in, a Job manifest out.

Every Job runs ``modelferry`` non-root with no privilege escalation, all capabilities dropped,
RuntimeDefault seccomp, no fixed UID and a read-only root filesystem (OpenShift restricted-v2),
reads secrets only by reference, and fails at once on exit codes 2 and 3 (usage, permanent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelferry.controller.config.controller import JobSettings
from modelferry.controller.kube.ownership import LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, MANAGED_BY
from modelferry.controller.workload.cabundle import ca_source, mount_ca
from modelferry.controller.workload.identity import ANNOTATION_HASH, inputs_hash

ANNOTATION_MODE = "modelferry.io/mode"
CONTAINER = "sync"


@dataclass
class JobOverrides:
    """Per-object overrides (a ModelSync's ``spec.job``); None keeps the controller default."""

    image: str | None = None
    resources: dict[str, Any] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    service_account_name: str | None = None
    active_deadline_seconds: int | None = None
    backoff_limit: int | None = None
    ca_configmap: str | None = None


@dataclass
class JobRequest:
    """What one synchronize Job must do; rendered by :func:`render_job`."""

    name: str
    namespace: str
    args: list[str]
    env: list[dict[str, Any]] = field(default_factory=list)
    owner: dict[str, Any] | None = None
    owner_kind: str = "Secret"
    owner_name: str = ""
    mode: str = "sync"
    labels: dict[str, str] = field(default_factory=dict)
    overrides: JobOverrides = field(default_factory=JobOverrides)
    volumes: list[dict[str, Any]] = field(default_factory=list)  # beside the scratch emptyDir (claims)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)


def _resources(settings: JobSettings) -> dict[str, Any]:
    limits: dict[str, str] = {"memory": settings.memory_limit}
    if settings.cpu_limit:
        limits["cpu"] = settings.cpu_limit
    return {"requests": {"cpu": settings.cpu_request, "memory": settings.memory_request}, "limits": limits}


def render_job(request: JobRequest, settings: JobSettings, *, extra_hash: Any = None) -> dict[str, Any]:
    """The Job manifest for ``request``; its inputs hash covers the spec and ``extra_hash``.

    ``extra_hash`` carries digests of the Secrets the Job reads, so changing a Secret's data
    replaces the Job while re-applying it unchanged never does.
    """
    overrides = request.overrides
    labels = {
        "app.kubernetes.io/name": "modelferry",
        "app.kubernetes.io/component": "sync",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_OWNER_KIND: request.owner_kind,
        LABEL_OWNER_NAME: request.owner_name,
        **request.labels,
    }
    env = [
        {"name": "HOME", "value": "/tmp/home"},  # noqa: S108 - an emptyDir, the root filesystem is read-only
        {"name": "HF_HOME", "value": "/tmp/hf"},  # noqa: S108
        {"name": "MODELFERRY_LOG_FORMAT", "value": "json"},
        *request.env,
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": overrides.image or settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["modelferry"],
        "args": list(request.args),
        "env": env,
        "resources": overrides.resources or _resources(settings),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}, *request.volume_mounts],  # noqa: S108
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # `modelferry sync` never talks to the Kubernetes API: no token in the pod for a tenant to take.
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": settings.scratch_size}}, *request.volumes],
    }
    named = overrides.ca_configmap or settings.ca_configmap
    keys = ("ca-bundle.crt",) if overrides.ca_configmap else tuple(settings.ca_configmap_keys)
    mount_ca(pod_spec, ca_source(named, keys, platform=settings.platform_ca), [container])
    service_account = overrides.service_account_name or settings.service_account_name
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if overrides.node_selector:
        pod_spec["nodeSelector"] = dict(overrides.node_selector)
    if overrides.tolerations:
        pod_spec["tolerations"] = list(overrides.tolerations)
    spec: dict[str, Any] = {
        "backoffLimit": settings.backoff_limit if overrides.backoff_limit is None else overrides.backoff_limit,
        "podFailurePolicy": {
            "rules": [
                # Usage (2) and permanent (3) failures fail again on retry: stop at once.
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [2, 3]}},
                # Evictions and preemptions are not the sync's fault: do not count them.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    deadline = overrides.active_deadline_seconds or settings.active_deadline_seconds
    if deadline:
        spec["activeDeadlineSeconds"] = deadline
    if settings.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
    metadata: dict[str, Any] = {
        "name": request.name,
        "namespace": request.namespace,
        "labels": labels,
        "annotations": {ANNOTATION_MODE: request.mode},
    }
    if request.owner is not None:
        metadata["ownerReferences"] = [request.owner]
    metadata["annotations"][ANNOTATION_HASH] = inputs_hash(spec, extra_hash)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}
