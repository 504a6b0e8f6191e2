"""Pure rendering of a ModelServer into its Deployment and Service.

The model comes from one of four places: a node-cached BaseModel/ClusterBaseModel (the agent's
directory mounted read-only from the host, and a required node affinity on the agent's node label
for that model being ``Ready``), a ``pvc://`` URI (the claim mounted read-only), or any other URI or
a ModelSync's target (an init container runs ``modelferry sync`` into an emptyDir or a claim). An
adapter (a TrainingRun's output or a URI) is fetched the same way. Every user string that reaches
``command``, ``args`` or an env value has ``$`` doubled, so Kubernetes never expands ``$(VAR)`` in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from modelferry.backends import SecretUse, secret_keys
from modelferry.controller.api.v1alpha1.modelserver import ModelServerSpec, parse_spec
from modelferry.controller.kube.expansion import literal
from modelferry.controller.kube.ownership import LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, MANAGED_BY
from modelferry.controller.serving.inputs import (
    ModelSource,
    Problem,
    Refusal,
    ServingContext,
    check_env_and_resources,
    resolve_adapter,
    resolve_model,
)
from modelferry.controller.serving.presets import (
    ADAPTER_PATH,
    MODEL_PATH,
    TMP,
    EngineCommand,
    Facts,
    engine_command,
    gpu_count,
)
from modelferry.controller.training.render import SECURITY  # the restricted container securityContext of every workload
from modelferry.controller.workload.identity import inputs_hash, owner_reference
from modelferry.controller.workload.secrets import secret_ref
from modelferry.errors import InvalidSpecError

KIND = "ModelServer"
SHM = "/dev/shm"  # noqa: S108 - a memory emptyDir (engines share tensors through it)
ANNOTATION_HASH = "modelferry.io/inputs-hash"
ANNOTATION_METRICS = "modelferry.io/metrics-path"
LABEL_SERVER = "modelferry.io/modelserver"


@dataclass
class RenderResult:
    objects: list[dict[str, Any]] = field(default_factory=list)  # Deployment, Service
    problem: Problem | None = None
    source: ModelSource | None = None
    port: int = 0


def _fetch(name: str, uri: str, path: str, secret: str | None, ctx: ServingContext) -> dict[str, Any]:
    """An init container that copies ``uri`` into ``path`` with ``modelferry sync`` (verified, resumable)."""
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": f"{TMP}/home"},
        {"name": "MODELFERRY_LOG_FORMAT", "value": "json"},
    ]
    if secret:
        # The keys each backend maps for serving (modelferry.backends), under their own names: the sync
        # reads them as its SDKs' standard variables.
        env += [secret_ref(key, secret, key, optional=True) for key, _, _ in secret_keys(SecretUse.SERVING)]
    return {
        "name": name,
        "image": ctx.image,
        "command": ["modelferry", "sync", literal(uri), path],
        "env": env,
        "securityContext": {**SECURITY, "readOnlyRootFilesystem": True},
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "volumeMounts": [
            {"name": name.removeprefix("fetch-"), "mountPath": path},
            {"name": "tmp", "mountPath": TMP},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _cache_volume(spec: ModelServerSpec, ms_name: str, what: str) -> tuple[dict[str, Any], str | None]:
    cache = spec.cache
    if cache.claim_name:
        return {"name": what, "persistentVolumeClaim": {"claimName": cache.claim_name}}, f"{ms_name}/{what}"
    return {"name": what, "emptyDir": {"sizeLimit": cache.size or "50Gi"}}, None


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _affinity(label: str | None) -> dict[str, Any] | None:
    if label is None:
        return None
    term = {"matchExpressions": [{"key": label, "operator": "In", "values": ["Ready"]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def labels_of(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelferry-server",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "serving",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_OWNER_KIND: KIND,
        LABEL_OWNER_NAME: name,
        LABEL_SERVER: name,
    }


def service_url(name: str, ns: str, port: int, ctx: ServingContext) -> str:
    return f"http://{name}.{ns}.svc.{ctx.cluster_domain}:{port}/v1"


def render(server: dict[str, Any], ctx: ServingContext) -> RenderResult:
    """The Deployment and Service that should exist, or the problem that stops them."""
    try:
        return _render(server, ctx)
    except Refusal as stop:
        return RenderResult(problem=stop.problem)


def _render(server: dict[str, Any], ctx: ServingContext) -> RenderResult:
    meta = server.get("metadata") or {}
    name, ns = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    check_env_and_resources(server.get("spec") or {})  # names the entry the API server would refuse in the pod
    try:
        spec = parse_spec(server)
    except InvalidSpecError as exc:
        raise Refusal(Problem(exc.reason, str(exc))) from None
    source, mounted = resolve_model(ns, spec, ctx)
    adapter = resolve_adapter(spec, ctx)
    gpus = gpu_count(spec.resources or {})
    facts = Facts(
        served_name=spec.model.served_name or name,
        adapter_name=adapter[1] if adapter else None,
        gpus=gpus,
        tensor_parallel=spec.engine.tensor_parallel_size or max(gpus, 1),
        model_file=spec.model.file or "model.gguf",
        adapter_file=(spec.adapter.file if spec.adapter else None) or "adapter.gguf",
    )
    if facts.adapter_name == facts.served_name:
        raise Refusal(Problem("NameClash", f"the adapter and the model are both served as {facts.served_name!r}"))
    for file in (facts.model_file, facts.adapter_file):
        if file.startswith("/") or ".." in file.split("/"):
            raise Refusal(
                Problem("InvalidFile", f"{file!r} must be a relative path inside the model or adapter directory")
            )
    cmd = engine_command(spec, facts, ctx.serve_image)
    init, volumes, mounts = _volumes(spec, name, source, mounted, adapter, ctx)
    pod = _pod(spec, cmd, init, volumes, mounts, source, ctx)
    hashed = inputs_hash(pod, source.uri)
    labels = labels_of(name)
    owner = [owner_reference(server)]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "annotations": {ANNOTATION_HASH: hashed},
            "ownerReferences": owner,
        },
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": {LABEL_SERVER: name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": (spec.startup_seconds or 1800) + 600,
            "template": {
                "metadata": {
                    "labels": labels,
                    # the PodMonitor scrapes each engine on its own metrics path
                    "annotations": {ANNOTATION_HASH: hashed, ANNOTATION_METRICS: cmd.metrics_path},
                },
                "spec": pod,
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "annotations": {ANNOTATION_HASH: inputs_hash(cmd.port, name)},
            "ownerReferences": owner,
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_SERVER: name},
            "ports": [{"name": "http", "port": cmd.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return RenderResult(objects=[deployment, service], source=source, port=cmd.port)


def _volumes(
    spec: ModelServerSpec,
    name: str,
    source: ModelSource,
    mounted: dict[str, Any] | None,
    adapter: tuple[str, str] | None,
    ctx: ServingContext,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Init containers, volumes and the engine's mounts for the model and the adapter."""
    init: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": TMP}]
    model_secret = spec.model.secret_ref
    if mounted is not None:
        sub = mounted.pop("_subPath", None)
        volumes.append(mounted)
        mounts.append({"name": "model", "mountPath": MODEL_PATH, "readOnly": True, **({"subPath": sub} if sub else {})})
    else:
        volume, sub = _cache_volume(spec, name, "model")
        volumes.append(volume)
        fetch = _fetch("fetch-model", source.uri, MODEL_PATH, model_secret, ctx)
        if sub:
            fetch["volumeMounts"][0]["subPath"] = sub
        init.append(fetch)
        mounts.append({"name": "model", "mountPath": MODEL_PATH, "readOnly": True, **({"subPath": sub} if sub else {})})
    if adapter is not None:
        volumes.append({"name": "adapter", "emptyDir": {"sizeLimit": "10Gi"}})
        secret = (spec.adapter.secret_ref if spec.adapter else None) or model_secret
        init.append(_fetch("fetch-adapter", adapter[0], ADAPTER_PATH, secret, ctx))
        mounts.append({"name": "adapter", "mountPath": ADAPTER_PATH, "readOnly": True})
    return init, volumes, mounts


def _pod(
    spec: ModelServerSpec,
    cmd: EngineCommand,
    init: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    source: ModelSource,
    ctx: ServingContext,
) -> dict[str, Any]:
    engine = spec.engine
    user_env = [{**e, "name": str(e["name"])} for e in engine.env]
    env = [*cmd.env, {"name": "HOME", "value": f"{TMP}/home"}, *user_env]
    volumes = [*volumes, {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}]
    container: dict[str, Any] = {
        "name": "engine",
        "image": cmd.image,
        "args": [literal(a) for a in [*cmd.args, *engine.args]],
        "env": [{**e, "value": literal(str(e["value"]))} if "value" in e else e for e in env],
        "ports": [{"name": "http", "containerPort": cmd.port, "protocol": "TCP"}],
        "resources": dict(spec.resources or {}),
        "startupProbe": _probe(cmd.health_path, 10, math.ceil((spec.startup_seconds or 1800) / 10)),
        "readinessProbe": _probe(cmd.health_path, 10, 3),
        "livenessProbe": _probe(cmd.health_path, 15, 4),
        "securityContext": {**SECURITY, "readOnlyRootFilesystem": not cmd.writable_root},
        "volumeMounts": [*mounts, {"name": "shm", "mountPath": SHM}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if cmd.command is not None:
        container["command"] = [literal(c) for c in cmd.command]
    pod_security: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if cmd.root_image and ctx.run_as_user is not None:
        pod_security["runAsUser"] = ctx.run_as_user
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security,
        "terminationGracePeriodSeconds": 60,
        "containers": [container],
        "volumes": volumes,
    }
    if init:
        pod["initContainers"] = init
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = list(spec.tolerations)
    affinity = _affinity(source.node_label)
    if affinity:
        pod["affinity"] = affinity
    return pod
