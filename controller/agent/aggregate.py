"""Controller side: per-node ConfigMap entries rolled up into BaseModel/ClusterBaseModel status.

:func:`aggregate` is pure (ConfigMaps in, status per model out); :func:`run_aggregator`
is the small loop the controller process starts: it lists the agents' ConfigMaps
and patches ``status`` {nodesReady, nodesFailed, state} where it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from modelferry.controller.agent.entries import RESOURCES_KEY, ModelStatus, parse_entry
from modelferry.controller.agent.tasks import ModelRef
from modelferry.controller.api.meta import ConditionStatus
from modelferry.controller.api.v1alpha1.basemodel import ConditionType, State
from modelferry.controller.kube.client import CONFIGMAPS, Kube, Resource
from modelferry.controller.kube.conditions import carry_transition_times
from modelferry.controller.kube.events import EventRecorder, now_iso
from modelferry.errors import ModelferryError, NotFoundError

log = logging.getLogger(__name__)

CONFIGMAP_SELECTOR = "app.kubernetes.io/component=model-agent"
_FIELDS: dict[str, str] = {
    ModelStatus.READY: "nodesReady",
    ModelStatus.FAILED: "nodesFailed",
    ModelStatus.UPDATING: "nodesUpdating",
}


def aggregate(configmaps: list[dict[str, Any]]) -> dict[ModelRef, dict[str, Any]]:
    """``{ref: {"nodesReady", "nodesFailed", "state", "modelInfo"}}`` per model (node = ConfigMap name)."""
    out: dict[ModelRef, dict[str, list[str]]] = {}
    configs: dict[ModelRef, dict[str, dict[str, Any]]] = {}
    failures: dict[ModelRef, dict[str, tuple[str, str]]] = {}
    for configmap in configmaps:
        node = str((configmap.get("metadata") or {}).get("name", ""))
        for key, value in (configmap.get("data") or {}).items():
            if key == RESOURCES_KEY:
                continue
            body = parse_entry(value)
            if body is None or "name" not in body:
                continue
            kind = str(body.get("kind") or ("ClusterBaseModel" if key.startswith("clusterbasemodel.") else "BaseModel"))
            namespace = str(body.get("namespace") or (key.split(".basemodel.")[0] if ".basemodel." in key else ""))
            ref = ModelRef(kind, "" if kind == "ClusterBaseModel" else namespace, str(body["name"]))
            bucket = out.setdefault(ref, {"nodesReady": [], "nodesFailed": [], "nodesUpdating": []})
            field = _FIELDS.get(str(body.get("status")))
            if field:
                bucket[field].append(node)
            if field == "nodesReady" and isinstance(body.get("config"), dict):
                configs.setdefault(ref, {})[node] = body["config"]
            if field == "nodesFailed":
                failures.setdefault(ref, {})[node] = (
                    str(body.get("reason") or "Failed"),
                    str(body.get("message") or ""),
                )
    result = {ref: status_for(b) for ref, b in out.items()}
    for ref, status in result.items():
        status["conditions"] = [ready_condition(status["state"], failures.get(ref, {}))]
    for ref, by_node in configs.items():
        # The metadata parsed on one Ready node (the same bytes everywhere: the first node by name).
        result[ref]["modelInfo"] = by_node[min(by_node)]
    return result


def status_for(nodes: dict[str, list[str]]) -> dict[str, Any]:
    """The status block: sorted node lists and a one-word state."""
    ready, failed, updating = (sorted(nodes.get(k, [])) for k in ("nodesReady", "nodesFailed", "nodesUpdating"))
    if ready:
        state = State.READY
    elif updating:
        state = State.IN_TRANSIT
    elif failed:
        state = State.FAILED
    else:
        state = State.PENDING
    return {"nodesReady": ready, "nodesFailed": failed, "state": state.value}


def ready_condition(state: str, failures: dict[str, tuple[str, str]]) -> dict[str, str]:
    """The ``Ready`` condition: True with a Ready node; else False, with the first failed node's reason."""
    ready, true, false = ConditionType.READY.value, ConditionStatus.TRUE.value, ConditionStatus.FALSE.value
    if state == State.READY:
        return {"type": ready, "status": true, "reason": "Ready", "message": "the model is ready on a node"}
    if failures:
        node = min(failures)
        reason, message = failures[node]
        more = f" (and {len(failures) - 1} more nodes)" if len(failures) > 1 else ""
        return {"type": ready, "status": false, "reason": reason, "message": f"node {node}: {message}{more}"}
    return {"type": ready, "status": false, "reason": state, "message": f"no node holds the model yet ({state})"}


def with_transition_times(want: dict[str, Any], have: dict[str, Any], now: str) -> dict[str, Any]:
    """``want`` with each condition's ``lastTransitionTime`` kept from ``have`` unless its status changed."""
    conditions = carry_transition_times(want.get("conditions") or [], have.get("conditions"), now)
    return {**want, "conditions": conditions} if conditions else want


def refusal_event(want: dict[str, Any], have: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of a Warning Event when the Ready condition turned False with a new reason."""
    new = next((c for c in want.get("conditions") or [] if c.get("type") == "Ready"), None)
    old = next((c for c in have.get("conditions") or [] if isinstance(c, dict) and c.get("type") == "Ready"), {})
    if new is None or new["status"] != "False" or "nodesFailed" not in want or not want["nodesFailed"]:
        return None
    if old.get("status") == "False" and old.get("reason") == new["reason"]:
        return None
    return new["reason"], new["message"]


EMPTY = {**status_for({}), "conditions": [ready_condition(State.PENDING, {})]}


async def aggregate_once(kube: Kube, namespace: str, group: str = "modelferry.io", version: str = "v1alpha1") -> int:
    """One pass; returns how many models got a new status."""
    basemodels = Resource(group, version, "basemodels", "BaseModel")
    clusterbasemodels = Resource(group, version, "clusterbasemodels", "ClusterBaseModel", namespaced=False)
    node_configmaps, _ = await kube.list(CONFIGMAPS, namespace, label_selector=CONFIGMAP_SELECTOR)
    rolled = aggregate(node_configmaps)
    events = EventRecorder(kube, component="modelferry-model-status")
    now = now_iso()
    changed = 0
    for resource in (basemodels, clusterbasemodels):
        items, _ = await kube.list(resource, None)
        for obj in items:
            ref = ModelRef.of({**obj, "kind": resource.kind})
            have = obj.get("status") or {}
            want = with_transition_times(rolled.get(ref, EMPTY), have, now)
            if all(have.get(k) == v for k, v in want.items()):
                continue
            try:
                await kube.patch(resource, ref.namespace or None, ref.name, {"status": want}, sub="status")
                changed += 1
            except NotFoundError:
                continue
            if (event := refusal_event(want, have)) is not None:
                await events.emit({**obj, "kind": resource.kind, "apiVersion": f"{group}/{version}"}, "Warning", *event)
    return changed


async def run_aggregator(
    kube: Kube,
    namespace: str,
    stop: asyncio.Event,
    *,
    interval: float = 15.0,
    group: str = "modelferry.io",
    version: str = "v1alpha1",
) -> None:
    """Until ``stop``: aggregate every ``interval`` seconds (start it beside the controller's other loops)."""
    while not stop.is_set():
        try:
            changed = await aggregate_once(kube, namespace, group, version)
            if changed:
                log.info("updated node status of %s models", changed)
        except ModelferryError as exc:
            log.warning("model status aggregation failed, retrying: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
