"""NodeAgent (cluster): how the controller runs the node agent's DaemonSet (the OLM install path)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from modelferry.controller.api.meta import (
    ApiModel,
    Condition,
    Int64,
    IntOrString,
    Kind,
    PrinterColumn,
    items,
    parse,
    prop,
)


class ConditionType(StrEnum):
    """The conditions of a NodeAgent."""

    READY = "Ready"


class Toleration(ApiModel):
    """A taint the agent tolerates."""

    key: str | None = prop("The taint key (empty with operator Exists: every taint).")
    operator: str | None = prop("Exists or Equal.", enum=["Exists", "Equal"])
    value: str | None = prop("The taint value (operator Equal).")
    effect: str | None = prop(
        "The taint effect (empty: every effect).", enum=["", "NoSchedule", "PreferNoSchedule", "NoExecute"]
    )
    toleration_seconds: Int64 | None = prop("How long a NoExecute taint is tolerated.")


class Resources(ApiModel):
    """Requests and limits of the agent container (default requests cpu 200m, memory 256Mi; limit memory 2Gi)"""

    requests: dict[str, IntOrString] | None = prop("Resources the agent container asks for.")
    limits: dict[str, IntOrString] | None = prop("Resources the agent container may use at most.")


class NodeAgentSpec(ApiModel):
    """How the agent DaemonSet runs; every field has a default."""

    image: str | None = prop(
        "Agent image (default the controller's own image, the one of this release)", maxLength=512, pattern=r"^[^\s$]+$"
    )
    image_pull_policy: str | None = prop(
        "imagePullPolicy of the agent container (default the Kubernetes default)",
        enum=["Always", "IfNotPresent", "Never"],
    )
    node_selector: dict[str, str] | None = prop(
        "Run the agent only on nodes with all these labels (default every node)"
    )
    tolerations: list[Toleration] | None = prop(
        "Taints the agent tolerates (default: every taint, operator Exists, since GPU nodes are usually tainted)"
    )
    models_root: str | None = prop(
        "Directory on each node (a hostPath) that holds the models (default /mnt/models)",
        maxLength=255,
        pattern="^/[A-Za-z0-9._/-]*$",
    )
    resources: Resources | None = prop(
        "Requests and limits of the agent container (default requests cpu 200m, memory 256Mi; limit memory 2Gi)"
    )
    workers: int | None = prop("Models downloaded at the same time on one node (default 2)", minimum=1, maximum=64)
    high_watermark: float | None = prop(
        "Refuse a download that would fill the models root beyond this fraction (default 0.9)", minimum=0.01, maximum=1
    )
    watch_ome: bool | None = prop(
        "Watch OME's ome.io/v1beta1 BaseModel/ClusterBaseModel instead of modelferry.io's (default false)"
    )
    log_format: str | None = prop("Log format of the agent (default json)", enum=["json", "text"])
    priority_class_name: str | None = prop(
        "PriorityClass of the agent pods (default system-node-critical)", maxLength=253
    )
    max_unavailable: IntOrString | None = prop(
        "Nodes whose agent restarts at once during an upgrade (default 1; a number or a percentage)"
    )


class NodeAgentStatus(ApiModel):
    """What the controller observed of the DaemonSet."""

    daemon_set: str | None = prop("Namespace/name of the DaemonSet the controller manages for this NodeAgent")
    desired_nodes: int | None = prop("Nodes that should run the agent (the DaemonSet's desiredNumberScheduled)")
    ready_nodes: int | None = prop("Nodes whose agent is ready")
    updated_nodes: int | None = prop("Nodes that run the current agent template")
    observed_generation: Int64 | None = prop("The NodeAgent generation this status describes")
    conditions: list[Condition] = items("Ready: the DaemonSet is rolled out (else why not).")


KIND = Kind(
    kind="NodeAgent",
    plural="nodeagents",
    version="v1alpha1",
    scope="Cluster",
    spec=NodeAgentSpec,
    status=NodeAgentStatus,
    description=(
        "NodeAgent: the node agent DaemonSet the controller runs in its own namespace (one per NodeAgent; the one "
        'named "default" is called modelferry-agent, others modelferry-agent-<name>).'
    ),
    comment=(
        "NodeAgent (cluster): how the controller runs the node agent's DaemonSet (the OLM install path, where a\n"
        "ClusterServiceVersion can only install Deployments). With the plain manifests, manifests/agent/ holds the\n"
        "same DaemonSet; create a NodeAgent only where that one is not applied."
    ),
    component="model-agent",
    spec_required=False,
    columns=(
        PrinterColumn("Desired", "integer", ".status.desiredNodes"),
        PrinterColumn("Ready", "integer", ".status.readyNodes"),
        PrinterColumn("DaemonSet", "string", ".status.daemonSet"),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
    ),
)


def parse_spec(obj: dict[str, Any]) -> NodeAgentSpec:
    """The typed spec of a NodeAgent (:class:`InvalidSpecError` naming the object and field)."""
    return parse(NodeAgentSpec, obj)
