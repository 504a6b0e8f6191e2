"""ModelSync (namespaced): copy a model from any source URI into a bucket prefix or a data connection."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from modelferry.controller.api.meta import (
    ApiModel,
    Condition,
    Int64,
    IntOrString,
    Kind,
    Object,
    Phase,
    PrinterColumn,
    Timestamp,
    items,
    parse,
    prop,
    required,
)


class ConditionType(StrEnum):
    """The conditions of a ModelSync."""

    READY = "Ready"  # inputs valid, Job exists
    SYNCED = "Synced"  # the copy is complete


class Source(ApiModel):
    """Where the model comes from."""

    uri: str = required(
        "hf://org/repo[@rev], s3://bucket/prefix, cos://bucket/prefix, oci://n/NS/b/BUCKET/o/PREFIX or pvc://claim/path.",
        minLength=1,
    )
    revision: str | None = prop("Hub branch, tag or commit; resolved to a commit once and pinned.")
    credentials_secret: str | None = prop(
        "Secret in this namespace with keys such as HF_TOKEN, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_S3_ENDPOINT, AWS_DEFAULT_REGION, IBMCLOUD_API_KEY."
    )
    include: list[str] = items("Only files matching one of these globs.")
    exclude: list[str] = items("Skip files matching one of these globs.")


class Target(ApiModel):
    """Where the model goes; set uri, or dataConnection (plus path)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.uri) || has(self.dataConnection)",
                    "message": "set target.uri or target.dataConnection",
                }
            ]
        }
    }

    uri: str | None = prop("s3://bucket/prefix, cos://..., oci://... or pvc://claim/path.")
    data_connection: str | None = prop(
        "An OpenShift AI S3 data connection Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_S3_ENDPOINT, "
        "AWS_S3_BUCKET, AWS_DEFAULT_REGION)."
    )
    path: str = prop("Prefix inside the data connection's bucket.", "models/")
    credentials_secret: str | None = prop("Secret with the target's credentials (same keys as the source's).")


class Decrypt(ApiModel):
    """Decrypt enigma-encrypted files while syncing (plaintext is verified before it lands)."""

    # required by the CRD; unset here reaches the controller's own InvalidDecrypt finding
    model_config = {"json_schema_extra": {"required": ["credentialsSecret"]}}

    credentials_secret: str | None = prop(
        "Secret whose MODELFERRY_ENIGMA__*, VAULT_*, BAO_*, AWS_* and OCI_* keys configure the KMS (passed by reference)."
    )


class Transfer(ApiModel):
    """Transfer tuning; controller defaults apply when unset."""

    concurrency: int | None = prop("Connections in flight across and within files.", minimum=1, maximum=256)
    part_size: IntOrString | None = prop("Bytes per ranged GET or multipart part, e.g. 64MiB.")
    size_limit: IntOrString | None = prop("Refuse sources larger than this, e.g. 650GB; 0 switches the check off.")


class JobOverrides(ApiModel):
    """Overrides for the sync Job."""

    image: str | None = prop("The sync image (only one the platform admin's job policy allows).")
    resources: Object | None = prop("Container resources (requests, limits).")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the sync pod must run on (keys the job policy allows)."
    )
    tolerations: list[Object] = items("Taints the sync pod tolerates (keys the job policy allows).")
    service_account_name: str | None = prop("The sync pod's ServiceAccount (when the job policy allows it).")
    # Any: invalid_ca_reference refuses what is not a ConfigMap name, a non-string too (InvalidCAConfigMap)
    ca_config_map: Any = prop(
        "ConfigMap in this namespace with PEM CA bundles (key ca-bundle.crt) trusted by the sync Job for every "
        "HTTPS endpoint; the controller's default (or OpenShift AI's odh-trusted-ca-bundle) when unset",
        type="string",
        maxLength=253,
    )
    active_deadline_seconds: int | None = prop("Seconds the sync Job may run in all.", minimum=1)
    backoff_limit: int | None = prop("Retries of the sync pod before the Job fails.", minimum=0)


class ModelSyncSpec(ApiModel):
    """What to copy, where to, and how."""

    source: Source = required("Where the model comes from.")
    target: Target = required("Where the model goes; set uri, or dataConnection (plus path).")
    decrypt: Decrypt | None = prop(
        "Decrypt enigma-encrypted files while syncing (plaintext is verified before it lands)."
    )
    transfer: Transfer = Field(
        default_factory=Transfer, description="Transfer tuning; controller defaults apply when unset."
    )
    job: JobOverrides = Field(default_factory=JobOverrides, description="Overrides for the sync Job.")


class ModelSyncStatus(ApiModel):
    """What the controller observed."""

    phase: Phase | None = prop("Pending, Running, Succeeded or Failed.")
    message: str | None = prop("The last thing that happened, for a person.")
    observed_generation: Int64 | None = prop("The generation of the spec this status describes.")
    resolved_revision: str | None = prop("The source revision actually copied (a commit sha for hf://).")
    job_name: str | None = prop("The sync Job of the current inputs.")
    inputs_hash: str | None = prop("Digest of the spec and Secret data the current Job was made from.")
    files_done: int | None = prop("Files copied and verified so far.")
    files_total: int | None = prop("Files to copy.")
    bytes_done: Int64 | None = prop("Bytes copied so far.")
    bytes_total: Int64 | None = prop("Bytes to copy.")
    percent: float | None = prop("Share of bytesTotal done, 0-100; read from the running sync's progress log lines.")
    eta_seconds: float | None = prop("Estimated seconds until the copy completes (while Running; absent when unknown).")
    rate_bytes_per_second: Int64 | None = prop("Recent transfer rate of the running sync.")
    start_time: Timestamp | None = prop("When the sync Job started.")
    completion_time: Timestamp | None = prop("When the copy completed.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready (inputs valid, Job exists) and Synced (the copy is complete).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


KIND = Kind(
    kind="ModelSync",
    plural="modelsyncs",
    version="v1alpha1",
    scope="Namespaced",
    spec=ModelSyncSpec,
    status=ModelSyncStatus,
    description="A request to copy a model, verified and resumable, from a source URI to a target.",
    comment=(
        "ModelSync (namespaced): copy a model from any source URI into a bucket prefix or a data connection.\n"
        "The controller (`modelferry controller`) turns each ModelSync into a Job running `modelferry sync`."
    ),
    component="controller",
    short_names=("msync",),
    columns=(
        PrinterColumn("Phase", "string", ".status.phase"),
        PrinterColumn("Source", "string", ".spec.source.uri"),
        PrinterColumn("Files", "string", ".status.filesDone"),
        PrinterColumn("Bytes", "string", ".status.bytesDone", 1),
        PrinterColumn("Percent", "number", ".status.percent"),
        PrinterColumn("ETA", "number", ".status.etaSeconds", 1),
        PrinterColumn("Job", "string", ".status.jobName", 1),
        PrinterColumn("Reason", "string", '.status.conditions[?(@.type=="Synced")].reason'),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
    ),
)


def parse_spec(obj: dict[str, Any]) -> ModelSyncSpec:
    """The typed spec of a ModelSync object (:class:`InvalidSpecError` naming the object and field)."""
    return parse(ModelSyncSpec, obj)
