"""``AgentSettings``: everything the node agent is configured with (env ``MODELFERRY_AGENT__*``)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from modelferry.settings import SyncSettings

OME_LABEL_PREFIX = "models.ome.io"
# OME's model agent defaults, applied with watch_ome where the user set nothing (seed: Configuration Reference).
OME_DEFAULTS: dict[str, Any] = {"namespace": "ome", "workers": 5, "reconcile_interval": 30.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | float) -> float:
    """Seconds from a Go duration (``30s``, ``10m``, ``1h30m``) or a plain number of seconds."""
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{value!r} is not a duration (write e.g. 30s, 10m, 1h30m)")
    return sum(float(n) * _UNIT[u] for n, u in parts)


class AgentOptions(BaseModel):
    """Agent-specific settings; transfer tuning and credentials come from the sync settings."""

    node_name: str = Field("", description="This node's name (downward API NODE_NAME); required")
    namespace: str = Field("modelferry", description="Namespace of the per-node ConfigMaps (POD_NAMESPACE)")
    models_root: str = Field("/mnt/models", description="Directory (a hostPath) that holds the models")
    read_only: bool = Field(False, description="The models root is read-only: report what is there, download nothing")
    workers: int = Field(2, ge=1, le=64, description="Models downloaded at the same time")
    download_retries: int = Field(3, ge=0, description="Whole-model attempts after the first on retryable errors")
    retry_backoff: float = Field(5.0, gt=0, description="Seconds before the first whole-model retry (doubles)")
    high_watermark: float = Field(
        0.9, gt=0, le=1, description="Refuse a download that would fill the models filesystem beyond this fraction"
    )
    reconcile_interval: float = Field(300.0, gt=0, description="Seconds between ConfigMap/label healing passes")
    resync_interval: float = Field(600.0, gt=0, description="Seconds between full relists of the model kinds")
    label_prefix: str = Field("models.modelferry.io", description="Prefix of the per-model node labels")
    api_group: str = Field("modelferry.io", description="API group of BaseModel/ClusterBaseModel to watch")
    api_version: str = Field("v1alpha1", description="API version of the watched kinds")
    watch_ome: bool = Field(False, description="Watch OME's ome.io/v1beta1 kinds instead of modelferry.io")
    gpu_shape: str | None = Field(None, description="TensorRT-LLM shape alias of this node (else NVML, else labels)")
    port: int = Field(
        8080, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz, /livez (0: any free port)"
    )
    label_retries: int = Field(5, ge=0, description="Retries of node label and ConfigMap updates on conflicts")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="A second port serving /metrics only (OME --metrics-port; None: --port)"
    )
    temp_dir: str | None = Field(
        None,
        description="OME --temp-dir; accepted, unused: downloads stage beside the model so the swap is a rename",
    )
    cleanup_temp: bool = Field(
        True, description="Remove the staging copy of a download that failed for good (OME --cleanup-temp)"
    )
    max_concurrent_reconciles: int = Field(
        10, ge=1, description="OME --max-concurrent-reconciles; accepted: one node has one reconcile loop"
    )
    allowed_local_roots: list[str] = Field(
        default_factory=list,
        description="Directories in the agent's pod that a storageUri may name as file:// (JSON list); empty "
        "refuses every file:// and pvc:// source (the agent would read them with its own rights)",
    )


class AgentSettings(SyncSettings):
    """Settings of ``modelferry agent``: the sync settings plus an ``agent`` block."""

    model_config = SettingsConfigDict(env_prefix="MODELFERRY_", env_nested_delimiter="__", extra="ignore")

    agent: AgentOptions = Field(default_factory=AgentOptions, description="Node agent settings")

    def label_prefix(self) -> str:
        """Node label prefix: OME's ``models.ome.io`` with ``watch_ome`` (its serving pods select on it)."""
        return OME_LABEL_PREFIX if self.agent.watch_ome else self.agent.label_prefix

    def group_version(self) -> tuple[str, str]:
        """The API group and version of the watched kinds."""
        if self.agent.watch_ome:
            return "ome.io", "v1beta1"
        return self.agent.api_group, self.agent.api_version
