"""Pure rendering of synchronize Jobs: plain dicts in, a Job manifest out.

Every Job runs ``modelferry`` non-root with no privilege escalation, all capabilities dropped,
RuntimeDefault seccomp, no fixed UID and a read-only root filesystem (OpenShift restricted-v2),
reads secrets only by reference, and fails at once on exit codes 2 and 3 (usage, permanent).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from controller.kube.ownership import LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, MANAGED_BY
from controller.operator.cabundle import ca_source, mount_ca
from controller.operator.settings import JobSettings
from modelferry.logs import register_scoped_secrets

GROUP = "modelferry.io"
VERSION = "v1alpha1"
ANNOTATION_HASH = "modelferry.io/inputs-hash"
ANNOTATION_MODE = "modelferry.io/mode"
CONTAINER = "sync"
TRUE_VALUES = frozenset({"true", "1", "yes"})


def is_true(value: str | None) -> bool:
    """A flag is set only for a literal true, 1 or yes (any case); nothing else is ever interpreted."""
    return value is not None and value.strip().lower() in TRUE_VALUES


def secret_data(secret: dict[str, Any] | None) -> dict[str, str]:
    """A Secret's values as text: ``data`` (base64) merged with ``stringData`` (only seen on input)."""
    if not secret:
        return {}
    out: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value or "").decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            out[key] = ""
    for key, value in (secret.get("stringData") or {}).items():
        out[key] = str(value)
    return out


# Secret keys whose values are credentials: registered with the log scrubber when the controller reads them,
# so a value that comes back in a failure record, status or Event is masked (bucket names and regions are not).
CREDENTIAL_KEY_MARKERS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSCODE", "CREDENTIAL")


def register_credentials(secret: dict[str, Any] | None) -> None:
    """Tell the scrubber (:mod:`modelferry.logs`) the credential values of a Secret just read.

    They are masked in text about the Secret's namespace only (``scrub(text, namespace)``): a tenant's
    values never mask anything in another namespace, nor in the controller's own logs.
    """
    if not secret:
        return
    meta = secret.get("metadata") or {}
    values = {
        value
        for key, value in secret_data(secret).items()
        if any(marker in key.upper() for marker in CREDENTIAL_KEY_MARKERS)
    }
    register_scoped_secrets(str(meta.get("namespace") or ""), str(meta.get("name") or ""), values)


def undecodable_keys(secret: dict[str, Any] | None) -> list[str]:
    """Keys of a Secret's ``data`` that are not base64 of UTF-8 text (:func:`secret_data` reads them as "")."""
    bad = []
    for key, value in ((secret or {}).get("data") or {}).items():
        try:
            base64.b64decode(value or "").decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            bad.append(key)
    return sorted(bad)


def not_text_finding(secret_name: str, keys: list[str]) -> str:
    """The message for a Secret whose values modelferry cannot read as text."""
    return (
        f"Secret {secret_name!r}: the value of {', '.join(keys)} is not UTF-8 text (binary or another encoding); "
        "store it as text (stringData, or base64 of UTF-8 in data)"
    )


def bounded_name(name: str, limit: int = 63) -> str:
    """``name`` if it fits in ``limit`` characters (the label value limit), else cut and ended by a hash.

    The hash covers the whole name, so two long names that share their first characters never get the
    same object name (and never replace each other's Job).
    """
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: limit - 11].rstrip('-.')}-{digest}"


def inputs_hash(*parts: Any) -> str:
    """A short stable digest of everything a Job depends on (never its values in clear)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def secret_ref(env_name: str, secret: str, key: str, *, optional: bool = False) -> dict[str, Any]:
    """An env var that reads one key of a Secret by reference."""
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": env_name, "valueFrom": {"secretKeyRef": ref}}


def owner_reference(obj: dict[str, Any], *, controller: bool = True) -> dict[str, Any]:
    """An ownerReference to ``obj`` so the garbage collector removes the Job with it."""
    meta = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion", "v1"),
        "kind": obj.get("kind", "Secret"),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "controller": controller,
        "blockOwnerDeletion": True,
    }


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
    ov = request.overrides
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
        "image": ov.image or settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["modelferry"],
        "args": list(request.args),
        "env": env,
        "resources": ov.resources or _resources(settings),
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
    named = ov.ca_configmap or settings.ca_configmap
    keys = ("ca-bundle.crt",) if ov.ca_configmap else tuple(settings.ca_configmap_keys)
    mount_ca(pod_spec, ca_source(named, keys, platform=settings.platform_ca), [container])
    sa = ov.service_account_name or settings.service_account_name
    if sa:
        pod_spec["serviceAccountName"] = sa
    if ov.node_selector:
        pod_spec["nodeSelector"] = dict(ov.node_selector)
    if ov.tolerations:
        pod_spec["tolerations"] = list(ov.tolerations)
    spec: dict[str, Any] = {
        "backoffLimit": settings.backoff_limit if ov.backoff_limit is None else ov.backoff_limit,
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
    deadline = ov.active_deadline_seconds or settings.active_deadline_seconds
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


def job_hash(job: dict[str, Any] | None) -> str | None:
    """The inputs hash a live Job was created with."""
    if not job:
        return None
    return ((job.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_HASH)


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
