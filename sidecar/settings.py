"""``SidecarSettings``: how one training run is staged, supervised, reported and shipped.

Built once by ``modelferry sidecar`` from a YAML file (``--config``), ``MODELFERRY_SIDECAR_*``
variables (nested with ``__``) and command-line values, in that order of precedence (lowest first).
MLflow keeps its own conventional variables (``MLFLOW_TRACKING_URI`` ...), read by :class:`MlflowSettings`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelferry.settings import Credentials, TransferSettings


class MlflowSettings(BaseModel):
    """Where metrics go; every field falls back to the matching ``MLFLOW_*`` variable."""

    tracking_uri: str | None = Field(None, description="Tracking server; MLFLOW_TRACKING_URI when unset")
    experiment_name: str | None = Field(None, description="Experiment; MLFLOW_EXPERIMENT_NAME or 'Default'")
    run_id: str | None = Field(None, description="Log into this existing run; MLFLOW_RUN_ID when unset")
    run_name: str | None = Field(None, description="Name of a new run")
    token: SecretStr | None = Field(None, description="Bearer token; MLFLOW_TRACKING_TOKEN when unset")
    username: str | None = Field(None, description="Basic auth user; MLFLOW_TRACKING_USERNAME when unset")
    password: SecretStr | None = Field(None, description="Basic auth password; MLFLOW_TRACKING_PASSWORD when unset")
    insecure_tls: bool | None = Field(None, description="Skip TLS verification; MLFLOW_TRACKING_INSECURE_TLS")
    batch_size: int = Field(200, ge=1, le=1000, description="Metrics per log_batch call (MLflow allows 1000)")
    flush_interval: float = Field(1.0, gt=0, description="Seconds between batches")
    buffer_limit: int = Field(100_000, ge=100, description="Metrics held while MLflow is down (oldest dropped)")
    retry_interval: float = Field(2.0, gt=0, description="Seconds between attempts while MLflow is down")
    request_timeout: float = Field(10.0, gt=0, description="Seconds per MLflow HTTP request")

    def resolved(self, environ: dict[str, str] | None = None) -> MlflowSettings:
        """A copy with ``MLFLOW_*`` fall-backs filled in."""
        env = os.environ if environ is None else environ
        data = self.model_dump()
        pairs = {
            "tracking_uri": "MLFLOW_TRACKING_URI",
            "experiment_name": "MLFLOW_EXPERIMENT_NAME",
            "run_id": "MLFLOW_RUN_ID",
            "username": "MLFLOW_TRACKING_USERNAME",
        }
        for key, var in pairs.items():
            if data[key] is None and env.get(var):
                data[key] = env[var]
        if self.token is None and env.get("MLFLOW_TRACKING_TOKEN"):
            data["token"] = env["MLFLOW_TRACKING_TOKEN"]
        else:
            data["token"] = self.token
        if self.password is None and env.get("MLFLOW_TRACKING_PASSWORD"):
            data["password"] = env["MLFLOW_TRACKING_PASSWORD"]
        else:
            data["password"] = self.password
        if data["insecure_tls"] is None:
            data["insecure_tls"] = env.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true", "yes")
        return MlflowSettings.model_validate(data)


class LifecycleSettings(BaseModel):
    """Stall detection, early stopping and shutdown."""

    stall_timeout: float = Field(0.0, ge=0, description="Seconds without new metrics or output before a stall; 0 off")
    stall_action: Literal["fail", "warn"] = Field("fail", description="On a stall: stop the trainer and fail, or warn")
    early_stopping_metric: str = Field("eval_loss", description="Metric watched for early stopping (lower is better)")
    early_stopping_patience: int = Field(0, ge=0, description="Reports without improvement before stopping; 0 off")
    early_stopping_threshold: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement")
    timeout: float = Field(0.0, ge=0, description="Seconds the trainer may run in all; 0 off")
    term_grace: float = Field(30.0, gt=0, description="Seconds between SIGTERM and SIGKILL for the trainer")
    poll_interval: float = Field(0.5, gt=0, description="Seconds between metric-file reads")


class SidecarSettings(BaseSettings):
    """Settings of ``modelferry sidecar``."""

    model_config = SettingsConfigDict(env_prefix="MODELFERRY_SIDECAR_", env_nested_delimiter="__", extra="forbid")

    workspace: Path = Field(Path("./workspace"), description="Shared workspace directory")
    runtime: str | None = Field(None, description="Built-in trainer (peft-lora) when no command is given")
    mode: Literal["local", "pod"] = Field("local", description="local: trainer is our child; pod: another container")
    base_model_uri: str | None = Field(None, description="Base model URI staged into WORKSPACE/model")
    dataset_uri: str | None = Field(None, description="Dataset URI (file or prefix) staged into WORKSPACE/data")
    output_uri: str | None = Field(None, description="Where WORKSPACE/output is uploaded on success")
    output_dir: str = Field("output", description="Output directory, relative to the workspace")
    metrics_file: str = Field("output/metrics.jsonl", description="Metrics JSON lines, relative to the workspace")
    trainer_state: str | None = Field(None, description="A trainer_state.json to follow (HF Trainer), relative")
    stdout_metrics: bool = Field(True, description="Also take JSON lines with a 'step' from the trainer's stdout")
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="Logged as MLflow params")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra MLflow tags")
    trainer_env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the trainer (the sidecar's own win)"
    )
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings, description="MLflow tracking")
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings, description="Stall and early stopping")
    transfer: TransferSettings = Field(default_factory=TransferSettings, description="Staging/upload tuning")
    source: Credentials = Field(default_factory=Credentials, description="Credentials to stage inputs")
    target: Credentials = Field(default_factory=Credentials, description="Credentials to upload outputs")
    rank: int = Field(0, ge=0, description="This worker's rank; only rank 0 streams metrics and uploads")
    status_file: str = Field(".modelferry/status.json", description="Progress report for the controller, relative")
    termination_log: str = Field("/dev/termination-log", description="Kubernetes termination message file")
