"""``ServingSettings``: ModelServer reconciling (env ``MODELFERRY_CONTROLLER__SERVING__*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from modelferry import __version__

# Containerfile.train (the train and serve extras), tagged per release: `modelferry serve` runs from it
SERVE_IMAGE = f"quay.io/modelferry/modelferry-train:{__version__}"


class ServingSettings(BaseModel):
    """Defaults for the Deployments the controller renders from ModelServers."""

    enabled: bool = Field(True, description="Watch ModelServer resources (turn off where the CRD is not installed)")
    image: str | None = Field(
        None, description="Image of the fetch init containers (`modelferry sync`); job.image when unset"
    )
    serve_image: str = Field(
        SERVE_IMAGE,
        description="Image of the transformers engine (`modelferry serve`): torch, transformers, peft and the serve extra",
    )
    models_root: str = Field("/mnt/models", description="The node agent's models root (its hostPath)")
    label_prefix: str = Field("models.modelferry.io", description="Prefix of the agent's per-model node labels")
    run_as_user: int = Field(
        1000,
        ge=0,
        description="UID for engine images whose default user is root (restricted PSA); 0 leaves it to the platform (OpenShift restricted-v2 assigns one)",
    )
    cluster_domain: str = Field("cluster.local", description="Cluster DNS domain used in status.url")
