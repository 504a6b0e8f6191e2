"""``AgentSettings``: everything the node agent is configured with (env ``MODELFERRY_AGENT__*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from modelferry.settings import SyncSettings


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
    api_backoff_seconds: float = Field(
        0.8,
        gt=0,
        description="First wait after a failed Kubernetes API call (watch reconnect, ConfigMap or node write); "
        "doubles per failure, with jitter",
    )
    api_backoff_max_seconds: float = Field(
        30.0, gt=0, description="Longest wait between retries of failed Kubernetes API calls"
    )
    watch_timeout_seconds: int = Field(240, ge=1, description="Server-side timeout of one watch; then it reconnects")


class AgentSettings(SyncSettings):
    """Settings of ``modelferry agent``: the sync settings plus an ``agent`` block."""

    model_config = SettingsConfigDict(env_prefix="MODELFERRY_", env_nested_delimiter="__", extra="ignore")

    agent: AgentOptions = Field(default_factory=AgentOptions, description="Node agent settings")

    def group_version(self) -> tuple[str, str]:
        """The API group and version of the watched kinds."""
        if self.agent.watch_ome:
            return "ome.io", "v1beta1"
        return self.agent.api_group, self.agent.api_version
