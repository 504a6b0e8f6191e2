"""BaseModel (namespaced) and ClusterBaseModel (cluster): models the node agent keeps on selected nodes.

Both kinds share one spec (OME's field names) and one status.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from modelferry.controller.api.meta import (
    ApiModel,
    Condition,
    Kind,
    Object,
    PrinterColumn,
    items,
    parse,
    prop,
    required,
)


class ConditionType(StrEnum):
    """The conditions of a BaseModel or ClusterBaseModel."""

    READY = "Ready"


class State(StrEnum):
    """The roll-up of the nodes' states."""

    READY = "Ready"
    IN_TRANSIT = "In_Transit"
    FAILED = "Failed"
    PENDING = "Pending"


class Storage(ApiModel):
    """Where the model comes from and which nodes hold it (OME field names)."""

    storage_uri: str = required(
        "Source: hf://org/repo[@rev], s3://bucket/prefix, cos://, oci://n/{ns}/b/{bucket}/o/{prefix}, pvc://, file://",
        minLength=1,
        pattern="^(hf|s3|cos|oci|pvc|file)://.+",
    )
    path: str | None = prop(
        "Directory under the models root (default: <namespace>/<name>, _cluster/<name> for ClusterBaseModel)"
    )
    key: str | None = prop(
        "Name of a Secret (the model's namespace; the agent's for ClusterBaseModel) with AWS_* or HF_TOKEN keys"
    )
    parameters: dict[str, str] = Field(
        default_factory=dict, description="Storage parameters (kept for OME compatibility)"
    )
    decrypt: bool | None = prop(
        "Decrypt enigma-encrypted files while downloading (KMS settings from the agent's MODELFERRY_ENIGMA__* "
        "environment)"
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels that must all match")
    node_affinity: Object | None = prop(
        "A Kubernetes NodeAffinity; requiredDuringSchedulingIgnoredDuringExecution decides"
    )


class Format(ApiModel):
    """A name and a version."""

    name: str | None = prop("The name, e.g. safetensors or transformers.")
    version: str | None = prop("The version, e.g. 4.45.")


class BaseModelSpec(ApiModel):
    """The model's source, the nodes that keep it, and what it is (OME's BaseModelSpec)."""

    storage: Storage = required("Where the model comes from and which nodes hold it (OME field names).")
    model_format: Format | None = prop("e.g. safetensors, gguf, TensorRTLLM (enables the shape filter)")
    model_framework: Format | None = prop("e.g. transformers 4.45")
    model_architecture: str | None = prop("e.g. LlamaForCausalLM (filled from config.json when empty)")
    model_type: str | None = prop("config.json model_type, e.g. llama")
    model_parameter_size: str | None = prop("Human-readable parameter count, e.g. 8.03B")
    model_capabilities: list[str] = items("TEXT_GENERATION, TEXT_EMBEDDINGS, VISION, TEXT_CLASSIFICATION")
    quantization: str | None = prop(
        "e.g. fp8, gptq-int4, awq-int4, bitsandbytes-nf4, compressed-tensors-int4, mlx-int4"
    )
    max_tokens: int | None = prop("Context length", minimum=0)


class BaseModelStatus(ApiModel):
    """The nodes' reports, rolled up by the agents."""

    nodes_ready: list[str] = items("Nodes that hold the model, verified.")
    nodes_failed: list[str] = items("Nodes that could not place the model.")
    state: str | None = prop("Ready, In_Transit, Failed or Pending")
    conditions: list[Condition] = items(
        "Ready: True on a Ready node; else False with the reason a node gave (UnsafePath, PathInUse, "
        "SourceNotAllowed ...)"
    )
    model_info: Object | None = prop(
        "Metadata parsed on a Ready node: modelArchitecture, modelParameterSize, maxTokens, modelCapabilities, "
        "quantization, memoryEstimateBytes ..."
    )


def _kind(kind: str, scope: str, short: str, comment: str) -> Kind:
    return Kind(
        kind=kind,
        plural=f"{kind.lower()}s",
        version="v1alpha1",
        scope=scope,
        spec=BaseModelSpec,
        status=BaseModelStatus,
        description=f"{kind}: a model the node agent keeps on selected nodes.",
        comment=f"{kind} ({comment}): models the node agent (`modelferry agent`) keeps on selected nodes.",
        component="model-agent",
        short_names=(short,),
        columns=(
            PrinterColumn("State", "string", ".status.state"),
            PrinterColumn("Ready", "string", ".status.nodesReady"),
            PrinterColumn("Params", "string", ".status.modelInfo.modelParameterSize"),
            PrinterColumn("Source", "string", ".spec.storage.storageUri"),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
        ),
    )


BASE_MODEL = _kind("BaseModel", "Namespaced", "bm", "namespaced")
CLUSTER_BASE_MODEL = _kind("ClusterBaseModel", "Cluster", "cbm", "cluster")


def parse_spec(obj: dict[str, Any]) -> BaseModelSpec:
    """The typed spec of a BaseModel or ClusterBaseModel (:class:`InvalidSpecError` naming the object and field)."""
    return parse(BaseModelSpec, obj)
