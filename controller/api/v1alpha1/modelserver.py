"""ModelServer (namespaced): serve a model modelferry placed, as a Deployment and a Service."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from modelferry.controller.api.meta import (
    ApiModel,
    Condition,
    Kind,
    Object,
    OpenModel,
    PrinterColumn,
    items,
    parse,
    prop,
    required,
)

API_NAME = "^[A-Za-z0-9][A-Za-z0-9._/:-]*$"  # a model or adapter name in API requests


class ConditionType(StrEnum):
    """The conditions of a ModelServer."""

    MODEL_AVAILABLE = "ModelAvailable"
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"


class ServerPhase(StrEnum):
    """The phases of a ModelServer."""

    PENDING = "Pending"
    LOADING = "Loading"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class EngineType(StrEnum):
    """The serving engines: the presets and ``custom``."""

    VLLM = "vllm"
    TGI = "tgi"
    LLAMA_CPP = "llama-cpp"
    TRANSFORMERS = "transformers"
    CUSTOM = "custom"


def _one_of(*names: str) -> dict[str, Any]:
    checks = ", ".join(f"has(self.{n})" for n in names)
    return {
        "x-kubernetes-validations": [
            {"rule": f"[{checks}].filter(x, x).size() == 1", "message": f"set exactly one of {', '.join(names)}"}
        ]
    }


class ModelSource(ApiModel):
    """Exactly one source: baseModel, clusterBaseModel, modelSync or uri."""

    model_config = {"json_schema_extra": _one_of("baseModel", "clusterBaseModel", "modelSync", "uri")}

    base_model: str | None = prop(
        "A BaseModel in this namespace, cached on nodes by the agent (mounted read-only).", maxLength=253
    )
    cluster_base_model: str | None = prop(
        "A ClusterBaseModel, cached on nodes by the agent (mounted read-only).", maxLength=253
    )
    model_sync: str | None = prop(
        "A ModelSync in this namespace; its target is pulled by an init container.", maxLength=253
    )
    uri: str | None = prop(
        "Any source URI (hf://, s3://, cos://, oci://, pvc://) pulled by an init container running modelferry sync.",
        maxLength=2048,
    )
    secret_ref: str | None = prop(
        "A Secret in this namespace with credentials for the pull (AWS_* keys, HF_TOKEN), read by reference.",
        maxLength=253,
    )
    served_name: str | None = prop(
        "The model's name in API requests [the ModelServer's name].", maxLength=128, pattern=API_NAME
    )
    file: str | None = prop("llama-cpp only, the GGUF file inside the model directory [model.gguf].", maxLength=512)


class Adapter(ApiModel):
    """Optional fine-tuned adapter on the base model: exactly one of trainingRun or uri."""

    model_config = {"json_schema_extra": _one_of("trainingRun", "uri")}

    training_run: str | None = prop(
        "A TrainingRun in this namespace; its output's adapter/ is served once it Succeeded.", maxLength=253
    )
    uri: str | None = prop("An adapter directory anywhere modelferry sync reads.", maxLength=2048)
    secret_ref: str | None = prop("A Secret with credentials for the adapter's store [model.secretRef].", maxLength=253)
    name: str | None = prop(
        "The adapter's name in API requests [the TrainingRun's name, else \"adapter\"].",
        maxLength=128,
        pattern=API_NAME,
    )
    file: str | None = prop(
        "llama-cpp only, the GGUF adapter file inside the adapter directory [adapter.gguf].", maxLength=512
    )


class EngineEnv(OpenModel):
    """An environment variable of the engine container (valueFrom and the rest are kept as given)."""

    name: Any = required("The variable's name.", type="string", maxLength=256)


class Engine(ApiModel):
    """The serving engine: a preset (pinned image, arguments, probes) or your own image."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "self.type != 'custom' || has(self.image)", "message": "a custom engine needs an image"},
                {
                    "rule": "self.type == 'custom' || !has(self.command)",
                    "message": "command is only for custom engines (presets know theirs); use args to add arguments",
                },
            ]
        }
    }

    type: str = required(
        "vllm, tgi, llama-cpp, transformers (the built-in `modelferry serve`) or custom.",
        enum=[e.value for e in EngineType],
    )
    image: str | None = prop("Overrides the preset's pinned image.", maxLength=512)
    command: list[str] = items(
        "custom only, the container command (no shell is added; $ is taken literally).",
        maxItems=64,
        items={"maxLength": 4096},
    )
    args: list[str] = items(
        "Extra arguments after the preset's ($ is taken literally, no $(VAR) expansion).",
        maxItems=128,
        items={"maxLength": 4096},
    )
    # dicts, not EngineEnv: check_env_and_resources says what is wrong with an entry, with its reason
    env: list[Object] = items(
        "Environment of the engine container (name and value or valueFrom).",
        maxItems=128,
        items=EngineEnv.model_json_schema(),
    )
    port: int | None = prop("The engine's HTTP port [the preset's].", minimum=1, maximum=65535)
    health_path: str | None = prop("The engine's health endpoint [the preset's].", maxLength=256, pattern="^/")
    metrics_path: str | None = prop("The engine's Prometheus endpoint [the preset's].", maxLength=256, pattern="^/")
    tensor_parallel_size: int | None = prop(
        "vLLM/TGI shards [the number of nvidia.com/gpu in the limits].", minimum=1, maximum=64
    )


class Cache(ApiModel):
    """Where uri/modelSync models are pulled to [an emptyDir]."""

    size: str | None = prop("emptyDir size limit [50Gi].")
    claim_name: str | None = prop(
        "A PersistentVolumeClaim to pull into (kept across pod restarts; unchanged files are not fetched again).",
        maxLength=253,
    )


class ModelServerSpec(ApiModel):
    """The model, the optional adapter, the engine and its pods."""

    model: ModelSource = required("Exactly one source: baseModel, clusterBaseModel, modelSync or uri.")
    adapter: Adapter | None = prop("Optional fine-tuned adapter on the base model: exactly one of trainingRun or uri.")
    engine: Engine = required("The serving engine: a preset (pinned image, arguments, probes) or your own image.")
    resources: Object | None = prop("Standard container resources (cpu, memory, nvidia.com/gpu).")
    replicas: int = prop("Pods that serve the model.", 1, minimum=0, maximum=1000)
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods must run on.")
    tolerations: list[Object] = items("Taints the pods tolerate.")
    cache: Cache = Field(default_factory=Cache, description="Where uri/modelSync models are pulled to [an emptyDir].")
    startup_seconds: int = prop(
        "How long the engine may take to load the model before Kubernetes restarts it.", 1800, minimum=60, maximum=86400
    )


class ModelServerStatus(ApiModel):
    """What the controller observed."""

    phase: ServerPhase | None = prop("Pending, Loading, Ready, Degraded or Failed.")
    replicas: int | None = prop("Pods of the Deployment (the scale subresource's status).")
    selector: str | None = prop("The pods' label selector (the scale subresource's).")
    ready_replicas: int | None = prop("Pods that serve.")
    updated_replicas: int | None = prop("Pods of the current template.")
    restarts: int | None = prop("Container restarts across the pods.")
    url: str | None = prop("The Service's OpenAI-compatible base URL.")
    model_revision: str | None = prop("The revision of the model served.")
    model_path: str | None = prop("Where the engine reads the model.")
    observed_generation: int | None = prop("The generation of the spec this status describes.")
    message: str | None = prop("The last thing that happened, for a person.")
    conditions: list[Condition] = items("ModelAvailable, Available, Progressing and Degraded.")


KIND = Kind(
    kind="ModelServer",
    plural="modelservers",
    version="v1alpha1",
    scope="Namespaced",
    spec=ModelServerSpec,
    status=ModelServerStatus,
    description="ModelServer: an OpenAI-compatible serving engine on a model modelferry placed.",
    comment=(
        "ModelServer (namespaced): serve a model modelferry placed with vLLM, TGI, llama.cpp, the built-in\n"
        "transformers engine (`modelferry serve`) or a custom image, as a Deployment + Service."
    ),
    component="serving",
    short_names=("msv",),
    columns=(
        PrinterColumn("Engine", "string", ".spec.engine.type"),
        PrinterColumn("Phase", "string", ".status.phase"),
        PrinterColumn("Ready", "integer", ".status.readyReplicas"),
        PrinterColumn("Replicas", "integer", ".spec.replicas"),
        PrinterColumn("URL", "string", ".status.url"),
        PrinterColumn("Revision", "string", ".status.modelRevision", 1),
        PrinterColumn("Reason", "string", '.status.conditions[?(@.type=="Degraded")].reason', 1),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
    ),
    validations=(
        {
            "rule": "size(self.metadata.name) <= 52 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            "message": "the name must be a DNS label of at most 52 characters starting with a letter (it names the "
            "Service)",
        },
    ),
    scale={
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    },
)


def parse_spec(obj: dict[str, Any]) -> ModelServerSpec:
    """The typed spec of a ModelServer (:class:`InvalidSpecError` naming the object and field)."""
    return parse(ModelServerSpec, obj)
