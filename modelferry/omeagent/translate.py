"""Pure translation of an OME-Agent configuration into one ``modelferry sync`` run.

``hf-download`` and ``replica`` become a source URI, a target URI and settings
overrides (dotted paths into :class:`~modelferry.settings.SyncSettings`), which
the CLI hands to the same engine as ``modelferry sync``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelferry.errors import UsageError
from modelferry.omeagent.config import BucketLocation, OMEAgentConfig
from modelferry.settings import TransferSettings

AUTH_TYPES = {
    "userprincipal": "user_principal",
    "user_principal": "user_principal",
    "apikey": "api_key",
    "api_key": "api_key",
    "instanceprincipal": "instance_principal",
    "instance_principal": "instance_principal",
    "resourceprincipal": "resource_principal",
    "resource_principal": "resource_principal",
}
GB = 1000**3


@dataclass
class SyncJob:
    """What a compatible subcommand runs: ``sync(source, target)`` with these settings."""

    source: str
    target: str
    revision: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _retry_overrides(config: OMEAgentConfig) -> dict[str, Any]:
    base = config.retry_interval_in_seconds
    default_cap = TransferSettings.model_fields["backoff_max"].default
    return {
        "transfer.concurrency": config.num_connections,
        "transfer.retries": config.max_retries,
        "transfer.backoff_base": base,
        # The delay doubles per attempt up to the cap; never let the cap undercut the first interval.
        "transfer.backoff_max": max(float(default_cap), base),
    }


def hf_download_job(config: OMEAgentConfig) -> SyncJob:
    """``hf-download``: model_name from the Hub into local_path (or model_store_directory)."""
    if not config.model_name:
        raise UsageError(
            "hf-download needs model_name",
            hint="Set model_name: org/name in the config file or OME_AGENT_MODEL_NAME",
        )
    name = config.model_name.strip().removeprefix("hf://")
    job = SyncJob(source=f"hf://{name}", target=config.model_dir, revision=config.revision)
    job.overrides.update(_retry_overrides(config))
    if config.hf_token is not None:
        job.overrides["source.hf.token"] = config.hf_token
    if config.enable_size_limit_check:
        job.overrides["transfer.size_limit"] = int(config.download_size_limit_gb * GB)
    else:
        job.overrides["transfer.size_limit"] = 0  # the CLI turns 0 into "no limit"
    if config.skip_sha:
        job.overrides["transfer.trust_size"] = True
        job.warnings.append(
            "skip_sha is set: files already present with the right size are NOT hashed and are trusted as they are; "
            "new downloads are still verified against the Hub's sha256"
        )
    return job


def _auth(config: OMEAgentConfig) -> str:
    if not config.auth_type:
        raise UsageError(
            "replica needs auth_type",
            hint="Set auth_type (UserPrincipal, InstancePrincipal or ResourcePrincipal) or OME_AGENT_AUTH_TYPE",
        )
    auth = AUTH_TYPES.get(config.auth_type.strip().lower())
    if auth is None:
        raise UsageError(
            f"auth_type {config.auth_type!r} is not supported",
            obj="auth_type",
            hint="Use UserPrincipal, InstancePrincipal or ResourcePrincipal",
        )
    return auth


def oci_uri(side: str, location: BucketLocation) -> str:
    """``oci://n/{namespace}/b/{bucket}/o/{prefix}`` for one side, naming missing keys."""
    missing = [f"{side}.{k}" for k in ("bucket_name", "namespace") if not getattr(location, k)]
    if missing:
        env = ", ".join("OME_AGENT_" + m.replace(".", "_").upper() for m in missing)
        raise UsageError(f"replica needs {', '.join(missing)}", hint=f"Set them in the config file or as {env}")
    prefix = location.prefix.strip("/")
    return f"oci://n/{location.namespace}/b/{location.bucket_name}/o/{prefix}".rstrip("/")


def replica_job(config: OMEAgentConfig) -> SyncJob:
    """``replica``: source bucket prefix to target bucket prefix, across regions and tenancies."""
    auth = _auth(config)
    job = SyncJob(source=oci_uri("source", config.source), target=oci_uri("target", config.target))
    job.overrides.update(_retry_overrides(config))
    for side, location in (("source", config.source), ("target", config.target)):
        job.overrides[f"{side}.oci.auth_type"] = auth
        job.overrides[f"{side}.oci.profile"] = config.profile
        if location.region:
            job.overrides[f"{side}.oci.region"] = location.region
        else:
            job.warnings.append(f"{side}.region is not set: the region of the OCI config profile is used")
    if config.source == config.target:
        raise UsageError("replica source and target are the same bucket and prefix", obj=job.source)
    return job
