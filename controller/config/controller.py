"""``ControllerSettings``: prefix ``MODELFERRY_CONTROLLER__`` (nested with ``__``), built once at startup."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelferry import __version__
from modelferry.controller.config.serving import ServingSettings

IMAGE = f"quay.io/modelferry/modelferry:{__version__}"  # Containerfile: controller, agent, sync Jobs, sidecar
TRAIN_IMAGE = f"quay.io/modelferry/modelferry-train:{__version__}"  # Containerfile.train, tagged per release


class JobSettings(BaseModel):
    """Defaults for the synchronize Jobs the controller creates."""

    image: str = Field(IMAGE, description="Image that runs `modelferry sync` (the controller's own image)")
    image_pull_policy: str = Field("IfNotPresent", description="imagePullPolicy of the sync container")
    service_account_name: str | None = Field(None, description="ServiceAccount of sync pods (namespace default)")
    backoff_limit: int = Field(3, ge=0, description="Retries of a sync pod after a retryable failure (exit 1)")
    active_deadline_seconds: int | None = Field(6 * 3600, ge=1, description="Kill a sync Job after this long")
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete finished Jobs after this long (None keeps them: automation waits on them)"
    )
    cpu_request: str = Field("500m", description="CPU request of the sync container")
    memory_request: str = Field("512Mi", description="Memory request of the sync container")
    cpu_limit: str | None = Field("4", description="CPU limit of the sync container (None: none)")
    memory_limit: str = Field("2Gi", description="Memory limit of the sync container")
    scratch_size: str = Field("1Gi", description="sizeLimit of the /tmp and HOME emptyDir")
    ca_configmap: str | None = Field(
        None,
        description="ConfigMap (in each Job's namespace) of PEM CA bundles trusted by Jobs and training pods; "
        "e.g. one labelled config.openshift.io/inject-trusted-cabundle=true",
    )
    ca_configmap_keys: list[str] = Field(
        default_factory=lambda: ["ca-bundle.crt"], description="Keys of ca_configmap to mount (each a PEM bundle)"
    )
    platform_ca: bool = Field(
        True,
        description="Mount OpenShift AI's odh-trusted-ca-bundle ConfigMap (optional volume) when no ca_configmap is set",
    )


class JobPolicySettings(BaseModel):
    """What a ModelSync's ``spec.job`` may choose (env ``MODELFERRY_CONTROLLER__JOB_POLICY__*``).

    The defaults trust tenants with nothing: the sync image is the controller's own, the pod runs under
    the namespace's default ServiceAccount, and no toleration or nodeSelector key is accepted.
    """

    allowed_images: list[str] = Field(
        default_factory=list,
        description="Images spec.job.image may name besides job.image (JSON list; an entry ending in '*' is a "
        "prefix, e.g. 'registry.example.com/modelferry/*')",
    )
    allow_service_account_name: bool = Field(
        False, description="Whether spec.job.serviceAccountName may be set (the pod then runs with that identity)"
    )
    allowed_toleration_keys: list[str] = Field(
        default_factory=list,
        description="Taint keys spec.job.tolerations may tolerate (JSON list; '*' allows any, incl. a keyless toleration)",
    )
    allowed_node_selector_keys: list[str] = Field(
        default_factory=list, description="Label keys spec.job.nodeSelector may use (JSON list; '*' allows any)"
    )


class TrainingSettings(BaseModel):
    """TrainingRun reconciling (env ``MODELFERRY_CONTROLLER__TRAINING__*``)."""

    enabled: bool = Field(True, description="Watch TrainingRun resources (turn off where the CRD is not installed)")
    sidecar_image: str | None = Field(None, description="Image of the training sidecar; job.image when unset")
    train_image: str = Field(
        TRAIN_IMAGE, description="Image of the built-in peft-lora trainer (built from Containerfile.train)"
    )
    pytorchjob: bool | None = Field(
        None, description="Render Kubeflow PyTorchJobs for distributed runs: None asks API discovery, or force on/off"
    )
    trainjob: bool | None = Field(
        None,
        description="Render Kubeflow Trainer v2 TrainJobs (trainer.kubeflow.org) for distributed runs, preferred over "
        "PyTorchJobs: None asks API discovery, or force on/off",
    )
    progress_seconds: float = Field(
        15.0,
        gt=0,
        description="At most how often a TrainingRun's sidecar log is read for progress, only while its pod is Running",
    )
    log_tail_lines: int = Field(200, ge=1, description="Lines of the sidecar's log read for its progress report")
    service_account_name: str | None = Field(None, description="ServiceAccount of training pods (namespace default)")


class NodeAgentSettings(BaseModel):
    """NodeAgent reconciling: the node agent's DaemonSet run from a NodeAgent resource (``MODELFERRY_CONTROLLER__NODE_AGENT__*``)."""

    enabled: bool = Field(
        True, description="Watch NodeAgent resources and run their DaemonSets (turn off where the CRD is not installed)"
    )
    image: str | None = Field(
        None,
        description="Agent image of a NodeAgent that names none; job.image (the controller's own image) when unset",
    )


class ControllerSettings(BaseSettings):
    """Settings of ``modelferry controller``."""

    model_config = SettingsConfigDict(env_prefix="MODELFERRY_CONTROLLER__", env_nested_delimiter="__", extra="ignore")

    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch (JSON list); empty watches the whole cluster"
    )
    model_source_secret: str = Field("model-source", description="Name of the Secret that drives Secret mode")
    model_source_label: str = Field(
        "modelferry.io/model-source", description="Label (value 'true') that also marks a model-source Secret"
    )
    data_connection: str = Field("demo-models", description="Default destination data connection Secret")
    secret_job_name: str = Field("synchronize-model", description="Name of the Job created in Secret mode")
    target_prefix: str = Field("models/", description="Prefix in the destination bucket in Secret mode")
    allowed_local_roots: list[str] = Field(
        default_factory=list,
        description="Directories (inside the Jobs' pods) that a ModelSync or TrainingRun source may name as "
        "file:// (JSON list); empty refuses every file:// source",
    )
    job: JobSettings = Field(default_factory=JobSettings, description="Defaults for created Jobs")
    job_policy: JobPolicySettings = Field(
        default_factory=JobPolicySettings, description="What a ModelSync's spec.job may override"
    )
    training: TrainingSettings = Field(default_factory=TrainingSettings, description="TrainingRun reconciling")
    serving: ServingSettings = Field(default_factory=ServingSettings, description="ModelServer reconciling")
    node_agent: NodeAgentSettings = Field(
        default_factory=NodeAgentSettings, description="NodeAgent reconciling (the agent DaemonSet, for OLM installs)"
    )
    workers: int = Field(4, ge=1, description="Reconciles running at once (one per object at a time)")
    resync_seconds: float = Field(300.0, gt=0, description="Requeue every object this often (level triggering)")
    watch_timeout_seconds: int = Field(240, ge=1, description="Server-side timeout of one watch; then reconnect")
    backoff_base: float = Field(1.0, gt=0, description="First requeue delay after a failed reconcile")
    backoff_max: float = Field(300.0, gt=0, description="Longest requeue delay after failed reconciles")
    leader_election: bool = Field(True, description="Only one replica acts at a time (coordination.k8s.io Lease)")
    lease_name: str = Field("modelferry-controller", description="Name of the Lease")
    lease_namespace: str | None = Field(None, description="Namespace of the Lease; the pod's namespace when unset")
    lease_duration_seconds: float = Field(
        15.0,
        gt=0,
        description="How long a standby waits, after it last saw the Lease change, before taking it over "
        "(client-go LeaseDuration)",
    )
    renew_deadline_seconds: float = Field(
        10.0,
        gt=0,
        description="How long the leader keeps retrying failed renewals before it stops acting "
        "(client-go RenewDeadline; below lease_duration_seconds)",
    )
    retry_period_seconds: float = Field(
        2.0,
        gt=0,
        description="How often the leader renews and a standby tries to acquire (client-go RetryPeriod; "
        "renew_deadline_seconds must exceed 1.2 times it)",
    )
    identity: str | None = Field(None, description="This replica's identity in the Lease; hostname when unset")
    watch_backoff_seconds: float = Field(
        0.8, gt=0, description="First wait before reconnecting a failed watch (doubles per failure, with jitter)"
    )
    watch_backoff_max_seconds: float = Field(
        30.0, gt=0, description="Longest wait between watch reconnects (a 429's Retry-After may ask for more)"
    )
    secret_page_size: int = Field(
        500,
        ge=0,
        description="Page size when listing Secrets for the name-indexed watch of referenced Secrets "
        "(0: one request; pages keep memory flat however many Secrets the cluster holds)",
    )
    metrics_host: str = Field("0.0.0.0", description="Address of the /metrics, /healthz, /readyz server")  # noqa: S104
    metrics_port: int = Field(8080, ge=0, le=65535, description="Port of that server (0 picks a free port)")
    shutdown_seconds: float = Field(20.0, gt=0, description="How long SIGTERM waits for running reconciles")
    agent_namespace: str = Field(
        "modelferry",
        description="Namespace of the node agents: their ConfigMaps rolled up into BaseModel status, and the "
        "DaemonSets run for NodeAgent resources",
    )
    sync_progress_seconds: float = Field(
        15.0,
        gt=0,
        description="At most how often a ModelSync's sync container log is read for progress, only while "
        "its pod is Running",
    )
    sync_log_tail_lines: int = Field(50, ge=1, description="Lines of the sync container's log read for progress")
    aggregate_models: bool = Field(True, description="Roll per-node agent status up into BaseModel status")
    aggregate_seconds: float = Field(15.0, gt=0, description="How often the BaseModel status roll-up runs")
    aggregate_api: str = Field(
        "modelferry.io/v1alpha1",
        pattern=r"^[a-z0-9.-]+/v[0-9a-z]+$",
        description="group/version of the BaseModel kinds whose status is rolled up (ome.io/v1beta1 for OME's)",
    )
    kubeconfig: str | None = Field(
        None, description="Kubeconfig file; in-cluster config, then ~/.kube/config when unset"
    )
    api_url: str | None = Field(None, description="API server URL without authentication (tests, kubectl proxy)")

    @model_validator(mode="after")
    def _lease_timing(self) -> Self:
        if self.renew_deadline_seconds >= self.lease_duration_seconds:
            raise ValueError("renew_deadline_seconds must be below lease_duration_seconds")
        if self.renew_deadline_seconds <= 1.2 * self.retry_period_seconds:
            raise ValueError("renew_deadline_seconds must exceed 1.2 times retry_period_seconds")
        return self
