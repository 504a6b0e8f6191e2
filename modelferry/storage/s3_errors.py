"""Translate botocore exceptions into the modelferry error hierarchy (the S3 boundary)."""

from __future__ import annotations

from botocore import exceptions as bx

from modelferry.errors import (
    AccessDeniedError,
    ModelferryError,
    NotFoundError,
    PermanentError,
    RetryableError,
    StalledError,
    ThrottledError,
    UsageError,
)
from modelferry.tls import TLSConfig, is_tls_failure

CREDENTIAL_HINT = (
    "Check the access key and secret (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or "
    "MODELFERRY_SOURCE__S3__* / MODELFERRY_TARGET__S3__*), the endpoint, and the bucket policy"
)

_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
    "AccountProblem",
}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
_MISSING_KEY = {"NoSuchKey", "NotFound", "404", "NoSuchUpload"}


class BucketNotFoundError(NotFoundError):
    """The bucket itself is missing (not just one key)."""


def _retry_after(exc: bx.ClientError) -> float | None:
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def translate_client_error(exc: bx.ClientError, *, bucket: str, what: str, endpoint: str) -> ModelferryError:
    """Map one S3 error response to our hierarchy, naming the bucket or object."""
    err = exc.response.get("Error", {}) or {}
    code = str(err.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    detail = err.get("Message") or code or f"HTTP {status}"
    if code == "NoSuchBucket" or (status == 404 and what == f"s3://{bucket}"):
        return BucketNotFoundError(
            f"bucket {bucket!r} does not exist at {endpoint}",
            obj=f"s3://{bucket}",
            hint="Check the bucket name and the endpoint/region (create the bucket first for a target)",
        )
    if code in _MISSING_KEY or status == 404:
        return NotFoundError(f"{what} does not exist ({detail})", obj=what)
    if code in _DENIED or status == 403:
        return AccessDeniedError(
            f"access denied to {what} ({code or status}: {detail})", obj=what, hint=CREDENTIAL_HINT
        )
    if code in _THROTTLED or status in (429, 503):
        return ThrottledError(
            f"{endpoint} is throttling requests for {what} ({code or status})", obj=what, retry_after=_retry_after(exc)
        )
    if code == "PreconditionFailed" or status == 412:
        return PermanentError(
            f"{what} changed while it was being copied",
            obj=what,
            hint="Run the sync again once the source is stable",
        )
    if status >= 500 or code in ("InternalError", "ServiceUnavailable", "RequestTimeout"):
        return RetryableError(f"{endpoint} failed on {what} ({code or status}: {detail})", obj=what)
    if code in ("InvalidRequest", "InvalidArgument", "InvalidBucketName", "MalformedXML", "EntityTooSmall"):
        return PermanentError(f"{endpoint} rejected the request for {what} ({code}: {detail})", obj=what)
    return PermanentError(f"S3 error on {what} ({code or status}: {detail})", obj=what)


def translate(
    exc: Exception, *, bucket: str, what: str, endpoint: str, tls: TLSConfig | None = None
) -> ModelferryError:
    """Map any botocore/urllib3 exception raised while talking to S3 (``tls``: the trust that was used)."""
    if isinstance(exc, ModelferryError):
        return exc
    if isinstance(exc, bx.ClientError):
        return translate_client_error(exc, bucket=bucket, what=what, endpoint=endpoint)
    if is_tls_failure(exc):
        return (tls or TLSConfig()).failure(endpoint, exc, what=what)
    if isinstance(exc, bx.ReadTimeoutError):
        return StalledError(f"read from {endpoint} timed out on {what}", obj=what)
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ConnectionClosedError):
        return RetryableError(
            f"cannot reach {endpoint} for {what}: {exc}",
            obj=what,
            hint="Check the endpoint URL (with scheme) and the network path to it",
        )
    if isinstance(exc, bx.SSLError):  # a handshake cut short (EOF, reset), not a certificate problem
        return RetryableError(f"TLS connection to {endpoint} broke for {what}: {exc}", obj=what)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return AccessDeniedError(f"no usable S3 credentials for {what}", obj=what, hint=CREDENTIAL_HINT)
    if isinstance(exc, bx.ProfileNotFound):
        return UsageError(
            f"AWS profile not found: {exc}", hint="Check --source-profile/--target-profile and ~/.aws/config"
        )
    if isinstance(exc, bx.IncompleteReadError | bx.ResponseStreamingError | bx.HTTPClientError):
        return RetryableError(f"connection to {endpoint} broke while reading {what}: {exc}", obj=what)
    if isinstance(exc, bx.BotoCoreError):
        return PermanentError(f"S3 client error on {what}: {exc}", obj=what)
    if isinstance(exc, OSError):
        return RetryableError(f"I/O error talking to {endpoint} for {what}: {exc}", obj=what)
    return PermanentError(f"unexpected S3 failure on {what}: {exc}", obj=what)
