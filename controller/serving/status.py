"""A ModelServer's status from its render result, Deployment and pods (a pure function).

Phases: ``Pending`` (waiting for the model, the adapter, or a node to run on), ``Loading`` (pods
started, none ready: the engine loads the model), ``Ready``, ``Degraded`` (some replicas serve,
some pods are unhealthy), ``Failed`` (the spec cannot work, or no replica serves and the pods fail:
crash loop, out of memory, image pull, model download). Conditions ``ModelAvailable``,
``Available``, ``Progressing`` and ``Degraded`` carry the reason taken from pod state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelferry.controller.api.v1alpha1.modelserver import ConditionType, ModelServerStatus, ServerPhase
from modelferry.controller.kube.conditions import condition
from modelferry.controller.serving.render import LABEL_SERVER, RenderResult
from modelferry.logs import scrub

FAILING = ("OOMKilled", "CrashLoopBackOff", "ImagePullBackOff", "ModelDownloadFailed", "CreateContainerConfigError")
PULL_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName")
MAX_MESSAGE = 400


@dataclass(frozen=True)
class Trouble:
    reason: str
    message: str


def _short(text: str) -> str:
    text = scrub(" ".join(str(text).split()))
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _container_trouble(pod_name: str, container: dict[str, Any], init: bool) -> Trouble | None:
    state, last = container.get("state") or {}, container.get("lastState") or {}
    waiting = (state.get("waiting") or {}).get("reason")
    terminated = state.get("terminated") or last.get("terminated") or {}
    name = container.get("name", "")
    if init and (waiting == "CrashLoopBackOff" or (terminated and terminated.get("exitCode", 0) != 0)):
        detail = terminated.get("message") or terminated.get("reason") or "it exited with an error"
        return Trouble("ModelDownloadFailed", f"pod {pod_name}: {name} could not fetch the files: {detail}")
    if terminated.get("reason") == "OOMKilled":
        return Trouble("OOMKilled", f"pod {pod_name}: {name} ran out of memory; raise resources.limits.memory")
    if waiting == "CrashLoopBackOff":
        detail = terminated.get("message") or f"exit code {terminated.get('exitCode', '?')}"
        return Trouble("CrashLoopBackOff", f"pod {pod_name}: {name} keeps crashing ({detail}); see its logs")
    if waiting in PULL_REASONS:
        message = (state.get("waiting") or {}).get("message") or "the image cannot be pulled"
        return Trouble("ImagePullBackOff", f"pod {pod_name}: {message}")
    if waiting == "CreateContainerConfigError":
        message = (state.get("waiting") or {}).get("message") or "a referenced Secret or ConfigMap is missing"
        return Trouble("CreateContainerConfigError", f"pod {pod_name}: {message}")
    return None


def pod_trouble(pods: list[dict[str, Any]]) -> Trouble | None:
    """The most telling problem among the pods (OOM over crash loop over pull over scheduling)."""
    found: list[Trouble] = []
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "")
        pod_status = pod.get("status") or {}
        for container in pod_status.get("initContainerStatuses") or []:
            trouble = _container_trouble(name, container, True)
            found += [trouble] if trouble else []
        for container in pod_status.get("containerStatuses") or []:
            trouble = _container_trouble(name, container, False)
            found += [trouble] if trouble else []
        for cond in pod_status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                found.append(Trouble("Unschedulable", f"pod {name}: {cond.get('message') or 'no node fits'}"))
    order = [*FAILING, "Unschedulable"]
    found.sort(key=lambda t: order.index(t.reason))
    return found[0] if found else None


def _condition(kind: ConditionType, ok: bool, reason: str, message: str, now: str, generation: Any) -> dict[str, Any]:
    return {**condition(kind, ok, reason, _short(message), now), "observedGeneration": generation}


def restarts(pods: list[dict[str, Any]]) -> int:
    return sum(
        int(container.get("restartCount") or 0)
        for p in pods
        for container in (p.get("status") or {}).get("containerStatuses") or []
    )


def compute_status(
    server: dict[str, Any],
    result: RenderResult,
    deployment: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    *,
    nodes_ready: int | None,
    url: str,
    now: str,
) -> dict[str, Any]:
    """The status to write. ``nodes_ready``: nodes holding a node-cached model (None for pulled models)."""
    generation = (server.get("metadata") or {}).get("generation")
    desired = int((server.get("spec") or {}).get("replicas", 1))
    dep_status = (deployment or {}).get("status") or {}
    ready, updated = int(dep_status.get("readyReplicas") or 0), int(dep_status.get("updatedReplicas") or 0)
    problem, source = result.problem, result.source
    trouble = pod_trouble(pods)
    no_node = source is not None and source.node_label is not None and nodes_ready == 0
    if trouble is not None and trouble.reason == "Unschedulable" and no_node and source is not None:
        trouble = Trouble(
            "NoNodeHoldsModel",
            f"no node holds {source.kind} {source.name} (Ready on 0 nodes): the pods wait for the agent to cache it; "
            f"check the {source.kind}'s nodeSelector and the agent's status",
        )
    # ModelAvailable
    if problem is not None:
        model_ok, model_reason, model_msg = False, problem.reason, problem.message
    elif no_node and source is not None:
        model_ok, model_reason = False, "NoNodeHoldsModel"
        model_msg = f"{source.kind} {source.name} is Ready on no node yet"
    elif trouble is not None and trouble.reason == "ModelDownloadFailed":
        model_ok, model_reason, model_msg = False, trouble.reason, trouble.message
    elif source is not None and source.node_label:
        model_ok, model_reason = True, "ModelCached"
        model_msg = f"{source.kind} {source.name} is Ready on {nodes_ready} node(s)"
    else:
        model_ok, model_reason = True, "ModelResolved"
        model_msg = f"pulled from {source.uri if source else '?'} by the fetch-model init container"
    # phase
    if problem is not None and not problem.waiting:
        phase, message = ServerPhase.FAILED, problem.message
    elif deployment is None:
        phase = ServerPhase.PENDING
        message = problem.message if problem else "creating the Deployment"
    elif desired == 0:
        phase, message = ServerPhase.PENDING, "scaled to zero replicas"
    elif ready >= 1 and trouble is None and ready >= desired:
        phase, message = ServerPhase.READY, f"{ready} of {desired} replicas ready"
    elif ready >= 1:
        phase = ServerPhase.DEGRADED
        message = trouble.message if trouble else f"{ready} of {desired} replicas ready"
    elif trouble is not None and trouble.reason in FAILING:
        phase, message = ServerPhase.FAILED, trouble.message
    elif trouble is not None:
        phase, message = ServerPhase.PENDING, trouble.message
    else:
        phase, message = ServerPhase.LOADING, "the engine is loading the model"
    if problem is not None and problem.waiting and deployment is not None:
        message = f"{problem.message}; the running Deployment is kept"
    # Available / Progressing / Degraded
    avail_reason = "MinimumReplicasAvailable" if ready else (trouble.reason if trouble else "NoReadyReplicas")
    rolling = deployment is not None and (
        updated < desired
        or ready < desired
        or dep_status.get("observedGeneration") != (deployment.get("metadata") or {}).get("generation")
    )
    deadline = next(
        (c for c in dep_status.get("conditions") or [] if c.get("reason") == "ProgressDeadlineExceeded"), None
    )
    if deadline is not None:
        progressing = _condition(
            ConditionType.PROGRESSING, False, "ProgressDeadlineExceeded", deadline.get("message", ""), now, generation
        )
    elif deployment is None:
        progressing = _condition(ConditionType.PROGRESSING, problem is None, "Creating", message, now, generation)
    elif rolling:
        progressing = _condition(
            ConditionType.PROGRESSING, True, "RollingOut", f"{updated} of {desired} replicas updated", now, generation
        )
    else:
        progressing = _condition(
            ConditionType.PROGRESSING, False, "RolloutComplete", f"{desired} replicas up to date", now, generation
        )
    if problem is not None and not problem.waiting:
        degraded = _condition(ConditionType.DEGRADED, True, problem.reason, problem.message, now, generation)
    elif trouble is not None:
        degraded = _condition(ConditionType.DEGRADED, True, trouble.reason, trouble.message, now, generation)
    else:
        degraded = _condition(ConditionType.DEGRADED, False, "AsExpected", "no unhealthy pods", now, generation)
    status: dict[str, Any] = {
        "phase": phase,
        "message": _short(message),
        "replicas": int(dep_status.get("replicas") or 0),  # pods that exist (the scale subresource reads it)
        "selector": f"{LABEL_SERVER}={(server.get('metadata') or {}).get('name', '')}",
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "restarts": restarts(pods),
        "observedGeneration": generation,
        "conditions": [
            _condition(ConditionType.MODEL_AVAILABLE, model_ok, model_reason, model_msg, now, generation),
            _condition(
                ConditionType.AVAILABLE,
                ready >= 1,
                avail_reason,
                f"{ready} of {desired} replicas ready",
                now,
                generation,
            ),
            progressing,
            degraded,
        ],
    }
    if deployment is not None and url:
        status["url"] = url
    if source is not None and source.revision:
        status["modelRevision"] = source.revision
    # Through the typed status; what was set (a null generation too) stays on the wire as it was set.
    return ModelServerStatus.model_validate(status).wire_as_set()
