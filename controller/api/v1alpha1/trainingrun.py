"""TrainingRun (namespaced): fine-tune a base model with any trainer beside ``modelferry sidecar``."""

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
    Phase,
    PrinterColumn,
    items,
    parse,
    prop,
    required,
)


class ConditionType(StrEnum):
    """The conditions of a TrainingRun."""

    READY = "Ready"  # inputs valid, Job exists
    COMPLETE = "Complete"  # training finished and the result is uploaded (or failed)


class Runtime(StrEnum):
    """The built-in trainers."""

    PEFT_LORA = "peft-lora"


class ObjectRef(ApiModel):
    """A reference to an object in this namespace."""

    name: str = required("The object's name.")


class BaseModelSource(ApiModel):
    """The model to fine-tune; a storage URI or a ModelSync in this namespace."""

    uri: str | None = prop("hf://, s3://, cos://, oci://n/../b/../o/.., pvc:// or file://")
    model_sync_ref: ObjectRef | None = prop("A ModelSync in this namespace whose target holds the model.")
    secret_ref: str | None = prop("Secret with AWS_* keys used to read the model (when the dataset has none)")


class Dataset(ApiModel):
    """The training data."""

    uri: str = required("A dataset file or prefix")
    secret_ref: str | None = prop(
        "Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_S3_ENDPOINT, AWS_DEFAULT_REGION"
    )


class EnvVar(OpenModel):
    """A container environment variable (valueFrom and the rest are kept as given)."""

    name: str = required("The variable's name.")
    value: str | None = prop("The variable's value (taken literally).")


class Trainer(ApiModel):
    """A built-in runtime, or your own image and command."""

    runtime: str | None = prop("Built-in trainer", enum=[r.value for r in Runtime])
    image: str | None = prop("Your trainer's image (with command).")
    command: list[str] = items("Your trainer's command (no shell is added).")
    args: list[str] = items("Arguments after the command.")
    env: list[EnvVar] = items("Environment of the trainer container.")
    resources: Object | None = prop("Container resources of the trainer (requests, limits).")


class MLflow(ApiModel):
    """Where the run is tracked."""

    tracking_uri: str | None = prop("The MLflow tracking server (http(s) URL).")
    experiment: str | None = prop("The MLflow experiment name.")
    secret_ref: str | None = prop("Secret with MLFLOW_TRACKING_URI/TOKEN/USERNAME/PASSWORD keys")


class Output(ApiModel):
    """Where the result goes."""

    uri: str = required("Where the result goes; failed runs leave logs under <uri>/failed/")
    secret_ref: str | None = prop("Secret with the output store's credentials.")


class Distributed(ApiModel):
    """How many workers train together."""

    workers: int = prop("Pods that train together.", 1, minimum=1)
    gpus_per_worker: int = prop("nvidia.com/gpu per pod.", 0, minimum=0)


class Workspace(ApiModel):
    """The volume the trainer and the sidecar share."""

    size: str | None = prop("emptyDir sizeLimit of the shared workspace (default 50Gi)")
    claim_name: str | None = prop("Use this PersistentVolumeClaim instead of an emptyDir")


class Timeouts(ApiModel):
    """Limits on the run's time."""

    active_deadline_seconds: int | None = prop("Seconds the Job may run in all.", minimum=1)
    stall_seconds: int | None = prop("No new metrics or output for this long fails the run", minimum=0)
    training_seconds: int | None = prop("Seconds the trainer may run.", minimum=0)
    backoff_limit: int | None = prop("Retries of the pod before the Job fails.", minimum=0)


class TrainingRunSpec(ApiModel):
    """The base model, data, trainer and output of a fine-tuning run."""

    base_model: BaseModelSource = required("The model to fine-tune; a storage URI or a ModelSync in this namespace.")
    dataset: Dataset = required("The training data.")
    trainer: Trainer = required("A built-in runtime, or your own image and command.")
    hyperparameters: Object = Field(
        default_factory=dict,
        description="Scalar values, e.g. num_train_epochs, learning_rate, train_batch_size, lora_r; logged as MLflow params",
    )
    mlflow: MLflow = Field(default_factory=MLflow, description="Where the run is tracked.")
    output: Output = required("Where the result goes.")
    distributed: Distributed = Field(default_factory=Distributed, description="How many workers train together.")
    workspace: Workspace = Field(default_factory=Workspace, description="The volume the trainer and the sidecar share.")
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Limits on the run's time.")


class Progress(OpenModel):
    """The trainer's progress, read from its metrics."""

    step: int | None = prop("The last step reported.")
    total_steps: int | None = prop("Steps of the whole run.")
    percent: float | None = prop("Share of totalSteps done, 0-100.")
    eta_seconds: float | None = prop("Estimated seconds until training ends.")
    metrics: dict[str, float] = Field(default_factory=dict, description="The last value of each metric (loss ...).")


class TrainingRunStatus(ApiModel):
    """What the controller observed."""

    phase: Phase | None = prop("Pending, Running, Succeeded or Failed.")
    observed_generation: int | None = prop("The generation of the spec this status describes.")
    job_name: str | None = prop("The training Job.")
    mlflow_run_id: str | None = prop("The MLflow run that tracks this run.")
    output_uri: str | None = prop("Where the result was uploaded.")
    progress: Progress | None = prop("The trainer's progress, read from its metrics.")
    conditions: list[Condition] = items(
        "Ready (inputs valid, Job exists) and Complete (training finished and its result is uploaded)."
    )


KIND = Kind(
    kind="TrainingRun",
    plural="trainingruns",
    version="v1alpha1",
    scope="Namespaced",
    spec=TrainingRunSpec,
    status=TrainingRunStatus,
    description="TrainingRun: fine-tune a base model with any trainer beside the modelferry sidecar.",
    comment="TrainingRun (namespaced): fine-tune a base model with any trainer beside `modelferry sidecar`.",
    component="training",
    short_names=("tr",),
    columns=(
        PrinterColumn("Phase", "string", ".status.phase"),
        PrinterColumn("Progress", "number", ".status.progress.percent"),
        PrinterColumn("Loss", "number", ".status.progress.metrics.loss"),
        PrinterColumn("MLflow Run", "string", ".status.mlflowRunId", 1),
        PrinterColumn("Output", "string", ".status.outputUri", 1),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
    ),
)


def parse_spec(obj: dict[str, Any]) -> TrainingRunSpec:
    """The typed spec of a TrainingRun (:class:`InvalidSpecError` naming the object and field)."""
    return parse(TrainingRunSpec, obj)
