"""``cos://bucket[/prefix]``: IBM Cloud Object Storage (HMAC keys in the s3 block, or IAM)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from modelferry.backends.grammar import format_bucket, parse_bucket
from modelferry.backends.registry import Backend, Credentials, SecretKey, SecretUse


class COSCredentials(BaseModel):
    """IBM Cloud Object Storage with IAM (HMAC keys go in the s3 block)."""

    api_key: SecretStr | None = Field(None, description="IBM Cloud API key; IBMCLOUD_API_KEY when unset")
    passcode: SecretStr | None = Field(None, description="One-time passcode, exchanged for an IAM token exactly once")
    iam_endpoint: str = Field("https://iam.cloud.ibm.com", description="IAM token endpoint")
    instance_crn: str | None = Field(None, description="Service instance CRN (a bucket CRN is accepted and trimmed)")
    endpoint_url: str | None = Field(None, description="COS S3 endpoint; derived from region when unset")
    region: str | None = Field(None, description="COS region or geo, e.g. us-geo or eu-de")


BACKEND = Backend(
    name="cos",
    schemes=("cos",),
    form="cos://bucket[/prefix]",
    parse=parse_bucket,
    format=format_bucket,
    opener="modelferry.storage.openers:open_cos",
    bucket_store=True,
    credentials=Credentials("cos", COSCredentials, "cos:// IAM access", ("IBMCLOUD_API_KEY",)),
    secret_keys=(
        SecretKey("IBMCLOUD_API_KEY", "api_key", SecretUse.MODELSYNC),
        SecretKey("COS_API_KEY", "api_key", SecretUse.MODELSYNC),
        SecretKey("COS_INSTANCE_CRN", "instance_crn", SecretUse.MODELSYNC),
        SecretKey("COS_REGION", "region", SecretUse.MODELSYNC),
        SecretKey("COS_ENDPOINT", "endpoint_url", SecretUse.MODELSYNC),
    ),
)
