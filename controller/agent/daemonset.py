"""The node agent's DaemonSet, rendered from a cluster-scoped ``NodeAgent`` resource (pure functions).

An OLM ClusterServiceVersion installs Deployments only, so on that path the controller runs the agent's
DaemonSet from a NodeAgent (as GPU and storage operators do with their cluster policies). With every
field at its default the DaemonSet equals ``manifests/agent/daemonset.yaml`` (a test compares them), so
the plain manifests and the OLM install run the same agent.

``render_daemonset`` takes the NodeAgent as a plain dict, checks its spec (:func:`validate`, for input
the CRD schema should have refused: a NodeAgent is cluster-scoped and only cluster administrators write
it, but it is still checked before anything reaches a pod spec), then renders the DaemonSet from the
typed spec (:class:`NodeAgentSpec`), or returns the :class:`Problem`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from modelferry.controller.api.v1alpha1.nodeagent import ConditionType, NodeAgentSpec, NodeAgentStatus, parse_spec
from modelferry.controller.kube.conditions import carry_transition_times, condition
from modelferry.controller.kube.expansion import literal
from modelferry.controller.kube.ownership import LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, MANAGED_BY
from modelferry.errors import InvalidSpecError

API_VERSION = "modelferry.io/v1alpha1"
KIND = "NodeAgent"
DEFAULT_NAME = "default"
BASE_NAME = "modelferry-agent"
SERVICE_ACCOUNT = "modelferry-agent"
ANNOTATION_HASH = "modelferry.io/inputs-hash"
SELECTOR = {"app.kubernetes.io/name": "modelferry", "app.kubernetes.io/component": "model-agent"}

DEFAULT_MODELS_ROOT = "/mnt/models"
DEFAULT_TOLERATIONS: list[dict[str, Any]] = [{"operator": "Exists"}]
DEFAULT_RESOURCES: dict[str, Any] = {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}
DEFAULT_PRIORITY_CLASS = "system-node-critical"

_MODELS_ROOT = re.compile(r"^/[A-Za-z0-9._/-]*$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei|e[0-9]+)?$")
_RESOURCE_NAME = re.compile(r"^([a-z0-9.-]+/)?[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_PERCENT = re.compile(r"^[0-9]{1,3}%$")
TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


@dataclass(frozen=True)
class Problem:
    """Why no DaemonSet can be rendered: a CamelCase reason and a message that says how to fix it."""

    reason: str
    message: str


TRUSTED_CA_CONFIGMAP = "modelferry-trusted-ca-bundle"  # manifests/agent/trusted-ca.yaml (OpenShift fills it)
TRUSTED_CA_DIR = "/etc/modelferry/ca/platform"


def daemonset_name(agent_name: str) -> str:
    """``modelferry-agent`` for the NodeAgent named ``default`` (the plain manifests' name), else suffixed."""
    if agent_name == DEFAULT_NAME:
        return BASE_NAME
    return f"{BASE_NAME}-{agent_name}"[:63].rstrip("-.")


def _bad(field: str, value: Any, fix: str) -> Problem:
    shown = json.dumps(value)[:80]
    return Problem("InvalidSpec", f"spec.{field} {shown} is not valid: {fix}")


def _check_resources(resources: Any) -> Problem | None:
    if not isinstance(resources, dict) or set(resources) - {"requests", "limits"}:
        return _bad("resources", resources, "give only 'requests' and 'limits'")
    for part, amounts in resources.items():
        if not isinstance(amounts, dict):
            return _bad(f"resources.{part}", amounts, "give a map of resource name to quantity")
        for name, amount in amounts.items():
            if not _RESOURCE_NAME.match(str(name)) or not _QUANTITY.match(str(amount)):
                return _bad(f"resources.{part}.{name}", amount, "use a quantity such as 500m, 1Gi or 2")
    return None


def _check_tolerations(tolerations: Any) -> Problem | None:
    if not isinstance(tolerations, list):
        return _bad("tolerations", tolerations, "give a list of tolerations")
    for i, tol in enumerate(tolerations):
        if not isinstance(tol, dict) or set(tol) - TOLERATION_KEYS:
            return _bad(f"tolerations[{i}]", tol, f"use only the keys {sorted(TOLERATION_KEYS)}")
        if tol.get("operator", "Equal") not in ("Exists", "Equal"):
            return _bad(f"tolerations[{i}].operator", tol.get("operator"), "use Exists or Equal")
        if tol.get("effect", "") not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            return _bad(f"tolerations[{i}].effect", tol.get("effect"), "use NoSchedule, PreferNoSchedule or NoExecute")
        for key in ("key", "value"):
            if key in tol and not (isinstance(tol[key], str) and _LABEL_VALUE.match(tol[key].split("/")[-1])):
                return _bad(f"tolerations[{i}].{key}", tol[key], "use a label key or value")
        seconds = tol.get("tolerationSeconds")
        if seconds is not None and (not isinstance(seconds, int) or isinstance(seconds, bool)):
            return _bad(f"tolerations[{i}].tolerationSeconds", seconds, "use a whole number of seconds")
    return None


def validate(spec: dict[str, Any]) -> Problem | None:
    """The first thing wrong with a NodeAgent's spec, or None."""
    image = spec.get("image")
    if image is not None and not (isinstance(image, str) and len(image) <= 512 and _IMAGE.match(image)):
        return _bad("image", image, "give an image reference such as quay.io/org/name:tag")
    if spec.get("imagePullPolicy") not in (None, "Always", "IfNotPresent", "Never"):
        return _bad("imagePullPolicy", spec["imagePullPolicy"], "use Always, IfNotPresent or Never")
    root = spec.get("modelsRoot")
    if root is not None and not (
        isinstance(root, str) and _MODELS_ROOT.match(root) and root != "/" and ".." not in root.split("/")
    ):
        return _bad("modelsRoot", root, "give an absolute directory such as /mnt/models, without '..'")
    selector = spec.get("nodeSelector")
    if selector is not None and not (
        isinstance(selector, dict)
        and all(_LABEL_KEY.match(str(k)) and isinstance(v, str) and _LABEL_VALUE.match(v) for k, v in selector.items())
    ):
        return _bad("nodeSelector", selector, "give a map of node label keys to label values")
    if "tolerations" in spec and (problem := _check_tolerations(spec["tolerations"])):
        return problem
    if "resources" in spec and (problem := _check_resources(spec["resources"])):
        return problem
    workers = spec.get("workers")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 64):
        return _bad("workers", workers, "use a whole number from 1 to 64")
    mark = spec.get("highWatermark")
    if mark is not None and (not isinstance(mark, int | float) or isinstance(mark, bool) or not 0 < mark <= 1):
        return _bad("highWatermark", mark, "use a fraction above 0 and at most 1, such as 0.9")
    if spec.get("watchOme") not in (None, True, False):
        return _bad("watchOme", spec["watchOme"], "use true or false")
    if spec.get("logFormat") not in (None, "json", "text"):
        return _bad("logFormat", spec["logFormat"], "use json or text")
    priority = spec.get("priorityClassName")
    if priority is not None and not (isinstance(priority, str) and _DNS_NAME.match(priority)):
        return _bad("priorityClassName", priority, "name a PriorityClass")
    surge = spec.get("maxUnavailable")
    if surge is not None and not (
        (isinstance(surge, int) and not isinstance(surge, bool) and surge >= 1)
        or (isinstance(surge, str) and _PERCENT.match(surge) and 0 < int(surge[:-1]) <= 100)
    ):
        return _bad("maxUnavailable", surge, "use a number of nodes (1 or more) or a percentage such as 10%")
    return None


def _env(name: str, value: str) -> dict[str, Any]:
    # Kubernetes expands $(VAR) in env values: a literal '$' is written '$$'.
    return {"name": name, "value": literal(value)}


def _fraction(value: float) -> str:
    """A fraction as written (1 rather than 1.0: the API server stores a whole number without the point)."""
    return str(int(value)) if value.is_integer() else str(value)


def _container(spec: NodeAgentSpec, image: str, root: str) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        _env("MODELFERRY_AGENT__MODELS_ROOT", root),
        _env("MODELFERRY_AGENT__WORKERS", str(2 if spec.workers is None else spec.workers)),
        _env(
            "MODELFERRY_AGENT__HIGH_WATERMARK", "0.9" if spec.high_watermark is None else _fraction(spec.high_watermark)
        ),
    ]
    if spec.watch_ome:
        env.append(_env("MODELFERRY_AGENT__WATCH_OME", "true"))
    env.append(_env("MODELFERRY_LOG_FORMAT", spec.log_format or "json"))
    # Trusted CAs for the model stores (docs/tls.md): used when the optional ConfigMap holds PEM files.
    env.append(_env("MODELFERRY_TLS__CLUSTER_BUNDLE", TRUSTED_CA_DIR))
    container: dict[str, Any] = {"name": "agent", "image": image}
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    container.update(
        {
            "command": ["modelferry", "agent"],  # args stay free for flags, as in OME's pod spec
            "env": env,
            "ports": [{"name": "http", "containerPort": 8080}],
            "startupProbe": {
                "httpGet": {"path": "/healthz", "port": "http"},
                "periodSeconds": 5,
                "failureThreshold": 60,
            },
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 15},
            "livenessProbe": {
                "httpGet": {"path": "/livez", "port": "http"},
                "periodSeconds": 30,
                "failureThreshold": 4,
            },
            "resources": spec.resources.wire()
            if spec.resources is not None
            else json.loads(json.dumps(DEFAULT_RESOURCES)),
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [
                {"name": "models", "mountPath": root},
                {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
                {"name": "trusted-ca", "mountPath": TRUSTED_CA_DIR, "readOnly": True},
            ],
        }
    )
    return container


def render_daemonset(agent: dict[str, Any], *, namespace: str, default_image: str) -> dict[str, Any] | Problem:
    """The DaemonSet that should exist for ``agent`` in ``namespace`` (owned by it), or why there is none."""
    meta = agent.get("metadata") or {}
    raw = agent.get("spec") or {}
    if not isinstance(raw, dict):
        return Problem("InvalidSpec", "spec must be an object; see `kubectl explain nodeagent.spec`")
    if problem := validate(raw):
        return problem
    try:
        spec = parse_spec(agent)
    except InvalidSpecError as exc:  # validate() refuses first; this names anything it let through
        return Problem(exc.reason, str(exc))
    name = str(meta.get("name") or DEFAULT_NAME)
    root = (spec.models_root or DEFAULT_MODELS_ROOT).rstrip("/") or DEFAULT_MODELS_ROOT
    pod: dict[str, Any] = {"serviceAccountName": SERVICE_ACCOUNT}
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    tolerations = DEFAULT_TOLERATIONS if spec.tolerations is None else [t.wire() for t in spec.tolerations]
    pod.update(
        {
            "priorityClassName": spec.priority_class_name or DEFAULT_PRIORITY_CLASS,
            "terminationGracePeriodSeconds": 60,
            "tolerations": json.loads(json.dumps(tolerations)),
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [_container(spec, spec.image or default_image, root)],
            "volumes": [
                {"name": "models", "hostPath": {"path": root, "type": "DirectoryOrCreate"}},
                {"name": "tmp", "emptyDir": {}},
                {
                    "name": "trusted-ca",
                    "configMap": {
                        "name": TRUSTED_CA_CONFIGMAP,
                        "items": [{"key": "ca-bundle.crt", "path": "ca-bundle.crt"}],
                        "optional": True,
                    },
                },
            ],
        }
    )
    ds_spec: dict[str, Any] = {
        "selector": {"matchLabels": dict(SELECTOR)},
        "updateStrategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 1 if spec.max_unavailable is None else spec.max_unavailable},
        },
        "template": {
            "metadata": {
                "labels": dict(SELECTOR),
                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"},
            },
            "spec": pod,
        },
    }
    digest = hashlib.sha256(json.dumps(ds_spec, sort_keys=True).encode()).hexdigest()[:16]
    owner = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name,
        "uid": meta.get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": daemonset_name(name),
            "namespace": namespace,
            "labels": {**SELECTOR, LABEL_MANAGED_BY: MANAGED_BY, LABEL_OWNER_KIND: KIND, LABEL_OWNER_NAME: name},
            "annotations": {ANNOTATION_HASH: digest},
            "ownerReferences": [owner],
        },
        "spec": ds_spec,
    }


def inputs_hash(daemonset: dict[str, Any] | None) -> str | None:
    """The inputs hash a DaemonSet was written with."""
    return (((daemonset or {}).get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_HASH)


def rollout(daemonset: dict[str, Any]) -> tuple[bool, str, str]:
    """Whether every selected node runs a ready, current agent: (ready, reason, message)."""
    meta, daemonset_status = daemonset.get("metadata") or {}, daemonset.get("status") or {}
    desired = int(daemonset_status.get("desiredNumberScheduled") or 0)
    ready, updated = (
        int(daemonset_status.get("numberReady") or 0),
        int(daemonset_status.get("updatedNumberScheduled") or 0),
    )
    if daemonset_status.get("observedGeneration") is None or int(daemonset_status["observedGeneration"]) < int(
        meta.get("generation") or 1
    ):
        return False, "RolloutPending", "the DaemonSet controller has not yet seen the newest template"
    if desired == 0:
        return False, "NoMatchingNodes", "no node matches spec.nodeSelector and spec.tolerations"
    if ready < desired or updated < desired:
        return False, "RollingOut", f"{ready} of {desired} nodes ready, {updated} updated"
    return True, "AllNodesReady", f"the agent is ready on all {desired} nodes"


def agent_status(
    agent: dict[str, Any], daemonset: dict[str, Any] | None, problem: Problem | None, namespace: str, now: str
) -> dict[str, Any]:
    """The NodeAgent's ``status``: the DaemonSet, node counts and a Ready condition."""
    meta = agent.get("metadata") or {}
    name = daemonset_name(str(meta.get("name") or DEFAULT_NAME))
    status: dict[str, Any] = {"daemonSet": f"{namespace}/{name}", "observedGeneration": meta.get("generation")}
    daemonset_status = (daemonset or {}).get("status") or {}
    status["desiredNodes"] = int(daemonset_status.get("desiredNumberScheduled") or 0)
    status["readyNodes"] = int(daemonset_status.get("numberReady") or 0)
    status["updatedNodes"] = int(daemonset_status.get("updatedNumberScheduled") or 0)
    if problem is not None:
        cond = condition(ConditionType.READY, False, problem.reason, problem.message, now)
    elif daemonset is None:
        cond = condition(
            ConditionType.READY, False, "DaemonSetPending", f"DaemonSet {namespace}/{name} is being created", now
        )
    else:
        cond = condition(ConditionType.READY, *rollout(daemonset), now)
    status["conditions"] = carry_transition_times([cond], (agent.get("status") or {}).get("conditions"))
    return NodeAgentStatus.model_validate(status).wire_as_set()
