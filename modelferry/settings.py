"""Settings: pydantic-settings models, prefix ``MODELFERRY_``, nested with ``__``.

One model per component. They are built once at startup (CLI entry, controller
main, sidecar main) and passed down; nothing reads the environment at import
time. Standard variables of the ecosystems we talk to (``AWS_*``, ``HF_TOKEN``,
``HF_ENDPOINT``, ``OCI_*``) are honoured as fall-backs by each backend.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelferry.backends.cos import COSCredentials
from modelferry.backends.hf import HFCredentials
from modelferry.backends.oci import OCICredentials
from modelferry.backends.registry import credential_blocks
from modelferry.backends.s3 import S3Credentials

__all__ = [
    "OTHER_COMPONENTS",
    "COSCredentials",
    "Credentials",
    "GiB",
    "HFCredentials",
    "MiB",
    "OCICredentials",
    "S3Credentials",
    "SyncSettings",
    "TLSSettings",
    "TransferSettings",
    "credentials_model",
    "field_paths",
    "masked",
    "shown_default",
    "warn_unknown_env",
]

log = logging.getLogger(__name__)

GiB = 1 << 30
MiB = 1 << 20


class TLSSettings(BaseModel):
    """How every HTTPS client of the process trusts servers (S3, Hub, IAM, Oracle, MLflow, Vault, Kubernetes)."""

    ca_bundle: str | None = Field(
        None,
        description="A PEM CA bundle file, or a directory of PEM files, trusted instead of the default store; "
        "AWS_CA_BUNDLE, REQUESTS_CA_BUNDLE, SSL_CERT_FILE or SSL_CERT_DIR when unset",
    )
    verify: bool = Field(True, description="Verify server certificates (off only for test endpoints)")
    cluster_bundle: str | None = Field(
        None,
        description="Directory where the cluster's CA ConfigMap may be mounted (set by the controller); "
        "trusted when it holds PEM files and nothing more specific is set",
    )


# The credentials blocks are the storage backends' (modelferry.backends): one field per backend, in
# registration order, so a new backend's block appears under source.* and target.* without an edit here.
def credentials_model() -> type[BaseModel]:
    fields: dict[str, Any] = {
        block.block: (block.model, Field(default_factory=block.model, description=block.description))
        for block in credential_blocks()
    }
    return create_model("Credentials", __doc__="Credentials for one side of a sync, per scheme.", **fields)


if TYPE_CHECKING:  # what mypy sees: the built-in blocks (a unit test keeps this in step with the registry)

    class Credentials(BaseModel):
        """Credentials for one side of a sync, per scheme."""

        s3: S3Credentials = Field(default_factory=S3Credentials)
        hf: HFCredentials = Field(default_factory=HFCredentials)
        cos: COSCredentials = Field(default_factory=COSCredentials)
        oci: OCICredentials = Field(default_factory=OCICredentials)

else:
    Credentials = credentials_model()


class TransferSettings(BaseModel):
    """How bytes move."""

    concurrency: int = Field(64, ge=1, le=256, description="Connections in flight, across and within files")
    part_size: int = Field(64 * MiB, ge=MiB, description="Bytes per ranged GET / multipart part")
    size_limit: int | None = Field(650 * 1000**3, description="Refuse plans larger than this many bytes (None: off)")
    retries: int = Field(5, ge=0, description="Attempts per part after the first")
    backoff_base: float = Field(0.5, gt=0, description="First retry delay in seconds (doubles, with jitter)")
    backoff_max: float = Field(30.0, gt=0, description="Longest retry delay in seconds")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to open a connection")
    stall_timeout: float = Field(60.0, gt=0, description="Seconds without a byte before a stream counts as stalled")
    speed_limit: int = Field(
        10 * 1024,
        ge=0,
        description="Low-speed limit in bytes/s (like curl's --speed-limit): a transfer moving less than this for "
        "speed_time seconds is retried, then fails; 0 switches the check off",
    )
    speed_time: float = Field(
        60.0, gt=0, description="Seconds the transfer may stay under speed_limit before it counts as too slow"
    )
    trust_size: bool = Field(False, description="Skip target files on equal size alone (no checksum)")
    upload_checksum: Literal["auto", "md5", "etag", "crc32"] = Field(
        "auto",
        description="How every part uploaded to S3 is verified: md5 (Content-MD5, checked by the store before it "
        "keeps the part, and the ETag answered must be that MD5), etag (no header; the ETag answered must be the "
        "part's MD5: the store hashes once), crc32 (x-amz-checksum-crc32, checked by the store and answered back: "
        "about a fifth of MD5's CPU per byte), or auto (crc32 on AWS S3, etag elsewhere). A store that answers "
        "no CRC32, or an opaque ETag (SSE-KMS, SSE-C), gets that part again with Content-MD5 and md5 for the rest "
        "of the run",
    )
    memory_budget: int = Field(256 * MiB, ge=8 * MiB, description="Bytes of file data held in memory at once")
    free_space_margin: int = Field(256 * MiB, ge=0, description="Bytes to keep free on a local target")


class SyncSettings(BaseSettings):
    """Settings of ``modelferry sync`` and everything built on the engine."""

    model_config = SettingsConfigDict(env_prefix="MODELFERRY_", env_nested_delimiter="__", extra="ignore")

    log_level: str = Field("info", description="debug, info, warning or error")
    log_format: Literal["text", "json"] = Field("text", description="Log line format")
    transfer: TransferSettings = Field(default_factory=TransferSettings, description="Transfer tuning")
    tls: TLSSettings = Field(default_factory=TLSSettings, description="Trust for every HTTPS connection")
    source: Credentials = Field(default_factory=Credentials, description="Credentials for the source")
    target: Credentials = Field(default_factory=Credentials, description="Credentials for the target")
    pvc_root: str = Field("/mnt/pvc", description="Where pvc://claim/subpath is mounted inside the pod")
    termination_log: str = Field("/dev/termination-log", description="Kubernetes termination message file")
    progress_interval: float = Field(5.0, gt=0, description="Seconds between progress log lines off a terminal")


def shown_default(model: type[BaseModel], dotted: str) -> str:
    """The default of ``model``'s field ``a.b`` as ``--help`` shows it (64MiB, 650GB, 5): one source of truth."""
    head, _, rest = dotted.partition(".")
    info = model.model_fields[head]
    value = info.get_default(call_default_factory=True)
    if rest:
        return shown_default(type(value), rest)
    if isinstance(value, bool) or not isinstance(value, int):
        return str(value)
    if value >= MiB and value % MiB == 0 and value < 1000**3:
        return f"{value // MiB}MiB"
    if value >= 1000**3 and value % 1000**3 == 0:
        return f"{value // 1000**3}GB"
    return str(value)


def field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """All nested field names as ``A__B__C`` (upper case) for unknown-variable checks."""
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}".upper()
        paths.add(key)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            paths |= field_paths(ann, key + "__")
    return paths


# Variables of optional components read alongside the sync settings (``sync --decrypt``).
OTHER_COMPONENTS = ("MODELFERRY_ENIGMA__",)


def warn_unknown_env(*models: type[BaseModel], environ: dict[str, str] | None = None) -> list[str]:
    """Warn about ``MODELFERRY_*`` variables no settings model knows (typos)."""
    env = os.environ if environ is None else environ
    known: set[str] = set()
    for model in models:
        known |= field_paths(model)
    unknown = []
    for name in env:
        other = next((c for c in OTHER_COMPONENTS if name.upper().startswith(c)), None)
        if other and not any(k.startswith(other[len("MODELFERRY_") :]) for k in known):
            continue  # checked by the component that reads them (e.g. `modelferry enigma`)
        if name.startswith("MODELFERRY_") and name[len("MODELFERRY_") :].upper() not in known:
            unknown.append(name)
            log.warning("unknown setting %s is ignored (check its spelling)", name)
    return unknown


def masked(settings: BaseModel) -> dict[str, Any]:
    """The effective settings with secrets shown as ``**********``."""
    return settings.model_dump(mode="json")
