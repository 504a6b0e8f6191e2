"""The ``oci`` SDK boundary: building an Object Storage client and translating its errors.

Authentication follows OME-Agent: a config file profile (user principal / API
key), instance principals or resource principals; ``region`` and ``endpoint``
override what the profile or signer says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import oci  # the [oci] extra; storage/__init__.py turns its absence into a UsageError

from modelferry.errors import (
    AccessDeniedError,
    ModelferryError,
    NotFoundError,
    PermanentError,
    RetryableError,
    ThrottledError,
    UsageError,
)
from modelferry.logs import register_secret
from modelferry.settings import OCICredentials, TransferSettings
from modelferry.tls import TLSConfig, is_tls_failure, pin_requests_session

T = TypeVar("T")


def translate(exc: BaseException, what: str, tls: TLSConfig | None = None) -> ModelferryError:
    """Map an ``oci`` SDK / transport exception to our hierarchy, naming the object (``tls``: the trust used)."""
    if isinstance(exc, ModelferryError):
        return exc
    if not isinstance(exc, oci.exceptions.ServiceError) and is_tls_failure(exc):
        return (tls or TLSConfig()).failure("Oracle Object Storage", exc, what=what)
    if isinstance(exc, oci.exceptions.ServiceError):
        status, code, message = exc.status, str(exc.code or ""), str(exc.message or "")
        text = f"Oracle Object Storage: {code or status} for {what}: {message}".rstrip(": ")
        if status == 404:
            # HEAD answers carry no body, so a bucket check's 404 has no code: name the bucket then too.
            if code in ("BucketNotFound", "NamespaceNotFound") or what.startswith("bucket "):
                text = f"Oracle Object Storage: {code or 'BucketNotFound'} for {what}: {message}".rstrip(": ")
                hint = "Check the namespace, the bucket name and the region (or --source-endpoint/--target-endpoint)"
            else:
                hint = "Check the object name or prefix"
            return NotFoundError(text, obj=what, hint=hint)
        if status in (401, 403) or code in ("NotAuthenticated", "NotAuthorized", "NotAuthorizedOrNotFound"):
            return AccessDeniedError(
                text,
                obj=what,
                hint="Check the OCI auth type, the key/fingerprint in the config profile, and the IAM policies",
            )
        if status in (429, 503):
            return ThrottledError(text, obj=what)
        if code in ("InvalidContentMD5", "BadDigest"):
            # We computed the MD5 from the bytes we sent: a mismatch means they changed in transit.
            return RetryableError(text, obj=what)
        if status >= 500 or status in (408, 409):
            return RetryableError(text, obj=what)
        return PermanentError(text, obj=what)
    if isinstance(exc, oci.exceptions.RequestException | oci._vendor.requests.exceptions.RequestException):
        return RetryableError(f"cannot reach Oracle Object Storage for {what}: {exc}", obj=what)
    if isinstance(exc, ConnectionError | TimeoutError):
        return RetryableError(f"connection to Oracle Object Storage failed for {what}: {exc}", obj=what)
    if isinstance(exc, oci.exceptions.ClientError):
        return UsageError(f"OCI client configuration problem: {exc}", obj=what)
    return PermanentError(f"Oracle Object Storage call failed for {what}: {exc!r}", obj=what)


def call(fn: Callable[[], T], what: str, tls: TLSConfig | None = None) -> T:
    """Run one SDK call, translating its exceptions."""
    try:
        return fn()
    except ModelferryError:
        raise
    except Exception as exc:
        raise translate(exc, what, tls) from exc


# The headers a delegation (on-behalf-of) request signs, as the SDK's delegation token signers do.
OBO_SIGNED_HEADERS = ["date", "(request-target)", "host", "opc-obo-token"]


class OboSigner(oci.signer.Signer):  # type: ignore[misc]
    """An API-key signer that acts on behalf of a user: ``opc-obo-token`` is sent and signed."""

    def __init__(self, config: dict[str, Any], token: str) -> None:
        super().__init__(
            config["tenancy"],
            config["user"],
            config["fingerprint"],
            config.get("key_file"),
            pass_phrase=config.get("pass_phrase"),
            private_key_content=config.get("key_content"),
        )
        self.obo_token = token
        body = ["content-length", "content-type", "x-content-sha256"]
        self.create_signers(self.api_key, self.private_key, OBO_SIGNED_HEADERS, body)

    def do_request_sign(self, request: Any, enforce_content_headers: bool = True) -> Any:
        request.headers["opc-obo-token"] = self.obo_token
        return super().do_request_sign(request, enforce_content_headers)


def obo_signer(config: dict[str, Any], token: str) -> OboSigner:
    register_secret(token)
    return OboSigner(config, token)


def make_client(
    creds: OCICredentials, transfer: TransferSettings, tls: TLSConfig | None = None
) -> tuple[Any, dict[str, Any]]:
    """An ObjectStorageClient (trusting ``tls``) plus facts for :meth:`OracleStore.identity` (region, tenancy)."""
    client, facts = _make_client(creds, transfer)
    pin_requests_session(client.base_client.session, tls or TLSConfig())
    return client, facts


def _make_client(creds: OCICredentials, transfer: TransferSettings) -> tuple[Any, dict[str, Any]]:
    kwargs: dict[str, Any] = {
        "retry_strategy": oci.retry.NoneRetryStrategy(),  # the engine retries, per part, with backoff
        "timeout": (transfer.connect_timeout, transfer.stall_timeout),
    }
    if creds.endpoint:
        kwargs["service_endpoint"] = creds.endpoint
    if creds.auth_type in ("user_principal", "api_key"):
        location = creds.config_file or oci.config.DEFAULT_LOCATION
        try:
            config = oci.config.from_file(file_location=location, profile_name=creds.profile)
            if creds.region:
                config["region"] = creds.region
            oci.config.validate_config(config)
            register_secret(config.get("pass_phrase"))
        except oci.exceptions.ConfigFileNotFound as exc:
            raise UsageError(
                f"OCI config file {location} not found",
                obj=location,
                hint="Mount the config file and key, pass --oci-config, or use instance/resource principals",
            ) from exc
        except oci.exceptions.ProfileNotFound as exc:
            raise UsageError(
                f"profile {creds.profile!r} not found in OCI config file {location}",
                obj=location,
                hint="Pass --oci-profile with a profile that exists in the file",
            ) from exc
        except (oci.exceptions.ClientError, ValueError, KeyError) as exc:
            raise UsageError(
                f"invalid OCI config file {location} (profile {creds.profile}): {exc}", obj=location
            ) from exc
        if creds.obo_token is not None:
            kwargs["signer"] = obo_signer(config, creds.obo_token.get_secret_value())
        try:
            client = oci.object_storage.ObjectStorageClient(config, **kwargs)
        except (oci.exceptions.ClientError, ValueError, OSError) as exc:
            raise UsageError(
                f"cannot use the key of OCI config file {location} (profile {creds.profile}): {exc}", obj=location
            ) from exc
        return client, {"region": config.get("region", ""), "tenancy": config.get("tenancy", "")}
    try:
        obo = creds.obo_token.get_secret_value() if creds.obo_token is not None else None
        if creds.auth_type == "instance_principal" and obo:
            signer = oci.auth.signers.InstancePrincipalsDelegationTokenSigner(delegation_token=obo)
        elif creds.auth_type == "instance_principal":
            signer = oci.auth.signers.InstancePrincipalsSecurityTokenSigner()
        elif obo:
            signer = oci.auth.signers.get_resource_principal_delegation_token_signer(delegation_token=obo)
        else:
            signer = oci.auth.signers.get_resource_principals_signer()
    except Exception as exc:
        kind = creds.auth_type.replace("_", " ")
        raise UsageError(
            f"cannot obtain OCI {kind} credentials: {exc}",
            hint="Instance principals work only on OCI compute; resource principals need OCI_RESOURCE_PRINCIPAL_*",
        ) from exc
    region = creds.region or getattr(signer, "region", None) or ""
    tenancy = getattr(signer, "tenancy_id", None) or ""
    config = {"region": region} if region else {}
    client = oci.object_storage.ObjectStorageClient(config, signer=signer, **kwargs)
    return client, {"region": region, "tenancy": tenancy}
