"""``s3://bucket[/prefix]``: AWS S3 and S3-compatible stores (MinIO, Ceph, ODF, IBM COS with HMAC keys)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from modelferry.backends.grammar import format_bucket, parse_bucket
from modelferry.backends.registry import Backend, CliOption, Credentials, SecretKey, SecretUse


class S3Credentials(BaseModel):
    """An S3-compatible endpoint (AWS, MinIO, Ceph, ODF, IBM COS with HMAC, Oracle's compat API)."""

    endpoint_url: str | None = Field(
        None, description="Endpoint with scheme; AWS_ENDPOINT_URL / AWS_S3_ENDPOINT when unset"
    )
    region: str | None = Field(None, description="Region; AWS_DEFAULT_REGION / AWS_REGION when unset")
    access_key_id: str | None = Field(None, description="Access key id; AWS_ACCESS_KEY_ID when unset")
    secret_access_key: SecretStr | None = Field(None, description="Secret key; AWS_SECRET_ACCESS_KEY when unset")
    session_token: SecretStr | None = Field(None, description="STS session token; AWS_SESSION_TOKEN when unset")
    profile: str | None = Field(None, description="A named profile from ~/.aws/config")
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="Bucket addressing; 'auto' uses path style for custom endpoints"
    )
    verify_tls: bool = Field(True, description="Verify the endpoint's TLS certificate (off: overrides tls.verify)")
    ca_bundle: str | None = Field(
        None, description="A CA bundle for this endpoint only; the tls setting (then AWS_CA_BUNDLE) when unset"
    )
    anonymous: bool = Field(False, description="Send unsigned requests (public buckets)")


# The four keys of an OpenShift AI S3 data connection are read everywhere; the others where they were
# first needed (changing where a key is mapped changes rendered Jobs, so their input hashes).
_EVERYWHERE = SecretUse.ALL | SecretUse.DATA_CONNECTION

BACKEND = Backend(
    name="s3",
    schemes=("s3",),
    form="s3://bucket[/prefix]",
    parse=parse_bucket,
    format=format_bucket,
    opener="modelferry.storage.openers:open_s3",
    bucket_store=True,
    credentials=Credentials(
        "s3", S3Credentials, "s3:// (and cos:// HMAC) access", ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    ),
    secret_keys=(
        SecretKey("AWS_ACCESS_KEY_ID", "access_key_id", _EVERYWHERE),
        SecretKey("AWS_SECRET_ACCESS_KEY", "secret_access_key", _EVERYWHERE),
        SecretKey("AWS_SESSION_TOKEN", "session_token", SecretUse.MODELSYNC | SecretUse.SERVING),
        SecretKey("AWS_S3_ENDPOINT", "endpoint_url", _EVERYWHERE),
        SecretKey("AWS_ENDPOINT_URL", "endpoint_url", SecretUse.MODELSYNC | SecretUse.AGENT),
        SecretKey("AWS_DEFAULT_REGION", "region", _EVERYWHERE),
        SecretKey("AWS_REGION", "region", SecretUse.MODELSYNC | SecretUse.AGENT),
    ),
    cli_options=(
        CliOption("--source-endpoint", ("source.s3.endpoint_url",), "S3/COS/OCI endpoint for the source."),
        CliOption("--target-endpoint", ("target.s3.endpoint_url",), "S3/COS/OCI endpoint for the target."),
        CliOption("--source-region", ("source.s3.region",), "Region of the source store."),
        CliOption("--target-region", ("target.s3.region",), "Region of the target store."),
        CliOption("--source-profile", ("source.s3.profile",), "AWS profile for the source."),
        CliOption("--target-profile", ("target.s3.profile",), "AWS profile for the target."),
        CliOption(
            "--addressing-style",
            ("source.s3.addressing_style", "target.s3.addressing_style"),
            "S3 bucket addressing for both sides.",
            choices=("auto", "path", "virtual"),
        ),
        CliOption(
            "--anonymous", ("source.s3.anonymous",), "Unsigned requests to the source (public buckets).", is_flag=True
        ),
    ),
    loggers=("botocore", "boto3", "s3transfer"),
)
