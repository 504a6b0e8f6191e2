"""IBM Cloud Object Storage (``cos://bucket/prefix``).

Three ways in:

- HMAC keys (the ``s3`` credential block or ``AWS_ACCESS_KEY_ID``): a plain
  :class:`~modelferry.storage.s3.S3Store` on the COS endpoint.
- An API key (``cos.api_key`` or ``IBMCLOUD_API_KEY``): exchanged at IAM for a
  bearer token, refreshed before it expires.
- A one-time passcode (``cos.passcode``): exchanged **exactly once**; the
  refresh token keeps the session alive afterwards. A passcode is single-use and
  short-lived, so a second exchange is refused with a clear message.

IAM requests carry ``Authorization: Bearer`` and ``ibm-service-instance-id``
(the instance CRN; a bucket CRN is trimmed by blanking fields 9-10) on unsigned
botocore requests.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from modelferry.errors import AccessDeniedError, PermanentError, RetryableError, UsageError
from modelferry.logs import register_secret
from modelferry.settings import COSCredentials, Credentials, TLSSettings, TransferSettings
from modelferry.storage.s3 import S3Store
from modelferry.storage.s3_config import s3_tls
from modelferry.tls import TLSConfig, is_tls_failure
from modelferry.uri import StorageURI

log = logging.getLogger(__name__)

GRANT_API_KEY = "urn:ibm:params:oauth:grant-type:apikey"
GRANT_PASSCODE = "urn:ibm:params:oauth:grant-type:passcode"
GRANT_REFRESH = "refresh_token"
REFRESH_MARGIN_S = 300.0  # renew tokens this long before they expire
_CLI_CLIENT = ("bx", "bx")  # the public client id IAM expects for passcode and refresh grants


def instance_crn(crn: str | None) -> str | None:
    """The service instance CRN: a bucket CRN with fields 9-10 (resource type, resource) blanked."""
    if not crn:
        return None
    fields = crn.strip().split(":")
    if len(fields) >= 10 and fields[0] == "crn":
        fields[8] = ""
        fields[9] = ""
    return ":".join(fields)


def cos_endpoint(region: str | None) -> str:
    """Public endpoint for a COS region or geo: us-geo -> s3.us..., eu-de -> s3.eu-de..."""
    if not region:
        raise UsageError(
            "cos:// needs a region or an endpoint",
            hint="Set MODELFERRY_SOURCE__COS__REGION (e.g. us-geo, eu-de) or MODELFERRY_SOURCE__COS__ENDPOINT_URL",
        )
    region = region.strip().lower()
    name = region[: -len("-geo")] if region.endswith("-geo") else region
    return f"https://s3.{name}.cloud-object-storage.appdomain.cloud"


class IAMTokenProvider:
    """Bearer tokens from IBM IAM: one API-key or passcode exchange, then refreshes before expiry."""

    def __init__(
        self,
        iam_endpoint: str,
        *,
        api_key: str | None = None,
        passcode: str | None = None,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        tls: TLSConfig | None = None,
    ) -> None:
        if not api_key and not passcode:
            raise UsageError("IBM IAM needs an API key or a one-time passcode")
        self.url = iam_endpoint.rstrip("/") + "/identity/token"
        self.api_key = api_key
        self.passcode = passcode
        self.timeout = timeout
        self.clock = clock
        self.tls = tls or TLSConfig()
        self.exchanges = 0
        self._passcode_spent = False
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh: str | None = None
        self._expires = 0.0
        register_secret(api_key)
        register_secret(passcode)

    def token(self) -> str:
        """A valid access token, renewed when it is within the refresh margin of expiry."""
        with self._lock:
            if self._token is None or self.clock() >= self._expires - REFRESH_MARGIN_S:
                self._renew()
            assert self._token is not None
            return self._token

    def _renew(self) -> None:
        if self.api_key:
            self._exchange({"grant_type": GRANT_API_KEY, "apikey": self.api_key}, auth=None)
        elif self._refresh:
            self._exchange({"grant_type": GRANT_REFRESH, "refresh_token": self._refresh}, auth=_CLI_CLIENT)
        else:
            self._exchange_passcode()

    def _exchange_passcode(self) -> None:
        if self._passcode_spent:
            raise PermanentError(
                "the IBM Cloud one-time passcode was already exchanged and is single-use",
                obj=self.url,
                hint="Create a new passcode (ibmcloud login --sso, or https://iam.cloud.ibm.com/identity/passcode) "
                "and update S3_SYNC_COS_TEMPORARY_PASSCODE / MODELFERRY_*__COS__PASSCODE, or use an API key",
            )
        self._passcode_spent = True  # spent the moment it is sent, whatever the answer
        try:
            self._exchange({"grant_type": GRANT_PASSCODE, "passcode": self.passcode or ""}, auth=_CLI_CLIENT)
        except RetryableError as exc:
            # Retrying would resend a passcode IAM may already have consumed.
            raise PermanentError(
                f"the one-time passcode exchange failed and cannot be retried: {exc}",
                obj=self.url,
                hint="Create a new passcode and run again",
            ) from exc

    def _exchange(self, form: dict[str, str], *, auth: tuple[str, str] | None) -> None:
        self.exchanges += 1
        grant = form["grant_type"]
        try:
            resp = httpx.post(
                self.url,
                data=form,
                auth=auth,
                headers={"Accept": "application/json"},
                timeout=self.timeout,
                verify=self.tls.ssl_context(),
            )
        except httpx.HTTPError as exc:
            if is_tls_failure(exc):
                raise self.tls.failure(f"IBM IAM at {self.url}", exc, what=self.url) from exc
            raise RetryableError(f"cannot reach IBM IAM at {self.url}: {type(exc).__name__}", obj=self.url) from exc
        if resp.status_code in (400, 401, 403):
            raise AccessDeniedError(
                f"IBM IAM refused the {grant.rsplit(':', 1)[-1]} grant (HTTP {resp.status_code})",
                obj=self.url,
                hint="Check the API key, or create a new one-time passcode (they expire after about 5 minutes)",
            )
        if resp.status_code == 429 or resp.status_code >= 500:
            raise RetryableError(f"IBM IAM answered HTTP {resp.status_code}", obj=self.url)
        if resp.status_code != 200:
            raise PermanentError(f"IBM IAM answered HTTP {resp.status_code}", obj=self.url)
        try:
            body = resp.json()
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError("IBM IAM answered without an access_token", obj=self.url) from exc
        register_secret(token)
        refresh = body.get("refresh_token")
        if refresh:
            register_secret(str(refresh))
            self._refresh = str(refresh)
        now = self.clock()
        expiration = body.get("expiration")
        expires_in = body.get("expires_in")
        if isinstance(expiration, int | float):
            self._expires = float(expiration)
        elif isinstance(expires_in, int | float):
            self._expires = now + float(expires_in)
        else:
            self._expires = now + 3600.0
        self._token = token
        log.info(
            "obtained an IBM IAM token (%s grant), valid for %ds", grant.rsplit(":", 1)[-1], int(self._expires - now)
        )


def bearer_hook(provider: IAMTokenProvider, instance: str | None) -> Callable[..., Any]:
    """A botocore ``before-send`` handler adding the IAM headers to each (unsigned) request."""

    def add_headers(request: Any, **_: Any) -> None:
        request.headers["Authorization"] = f"Bearer {provider.token()}"
        if instance:
            request.headers["ibm-service-instance-id"] = instance

    return add_headers


class COSStore(S3Store):
    """An S3Store whose requests carry IBM IAM bearer tokens instead of signatures."""

    def __init__(self, iam: IAMTokenProvider, *args: Any, **kwargs: Any) -> None:
        self.iam = iam
        super().__init__(*args, **kwargs)


def open_cos_store(
    uri: StorageURI, credentials: Credentials, transfer: TransferSettings, tls: TLSSettings | None = None
) -> S3Store:
    """An S3Store for ``cos://`` with HMAC keys, an API key or a one-time passcode (``tls``: the trust setting)."""
    cos: COSCredentials = credentials.cos
    endpoint = cos.endpoint_url or credentials.s3.endpoint_url or cos_endpoint(cos.region)
    s3 = credentials.s3.model_copy(
        update={"endpoint_url": endpoint, "region": credentials.s3.region or cos.region or "us-geo"}
    )
    if s3.region and s3.region.endswith("-geo"):
        s3 = s3.model_copy(update={"region": "us-east-1"})  # SigV4 scope; COS ignores it
    hmac = bool(credentials.s3.access_key_id or os.environ.get("AWS_ACCESS_KEY_ID"))
    passcode = cos.passcode.get_secret_value() if cos.passcode else None
    api_key = cos.api_key.get_secret_value() if cos.api_key else os.environ.get("IBMCLOUD_API_KEY")
    if hmac and not passcode and not api_key:
        return S3Store(uri, s3, transfer, tls=tls)
    if not passcode and not api_key:
        raise UsageError(
            f"no credentials for {uri}",
            obj=str(uri),
            hint="Give HMAC keys (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), an API key (IBMCLOUD_API_KEY) "
            "or a one-time passcode (MODELFERRY_*__COS__PASSCODE)",
        )
    instance = instance_crn(cos.instance_crn)
    if not instance:
        log.warning("no COS instance CRN given: bucket listing and creation may be refused by COS")
    provider = IAMTokenProvider(
        cos.iam_endpoint,
        api_key=None if passcode else api_key,
        passcode=passcode,
        timeout=transfer.connect_timeout * 3,
        tls=s3_tls(s3, tls),  # IAM and COS sit behind the same trust (a private IAM in a dev region, a proxy)
    )
    provider.token()  # fail fast, and spend a passcode exactly once, before any S3 call
    who = hashlib.sha256(api_key.encode()).hexdigest()[:16] if api_key and not passcode else str(id(provider))
    return COSStore(
        provider,
        uri,
        s3.model_copy(update={"access_key_id": None, "secret_access_key": None, "anonymous": False}),
        transfer,
        endpoint_url=endpoint,
        identity_key=f"cos-iam:{endpoint}|{instance or ''}|{who}",
        before_send=bearer_hook(provider, instance),
        tls=tls,
    )
