"""Pure configuration of the S3 client: endpoint, region, TLS, botocore Config, checksum helpers."""

from __future__ import annotations

import base64
import os
from typing import Any
from urllib.parse import urlparse

from botocore import UNSIGNED
from botocore.config import Config

from modelferry.checksums import b64_to_hex, clean_etag
from modelferry.settings import S3Credentials, TLSSettings, TransferSettings
from modelferry.tls import AWS_VARIABLES, TLSConfig, resolve_tls

_HEX = frozenset("0123456789abcdef")


def resolve_endpoint(creds: S3Credentials, environ: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """The endpoint: credentials, then AWS_ENDPOINT_URL(_S3), then AWS_S3_ENDPOINT (OpenShift AI)."""
    env = os.environ if environ is None else environ
    value = (
        creds.endpoint_url
        or env.get("AWS_ENDPOINT_URL_S3")
        or env.get("AWS_ENDPOINT_URL")
        or env.get("AWS_S3_ENDPOINT")
    )
    if not value:
        return None
    value = value.strip().rstrip("/")
    if "://" not in value:
        value = f"https://{value}"  # data connections sometimes hold a bare host
    return value


def resolve_region(creds: S3Credentials, environ: dict[str, str] | os._Environ[str] | None = None) -> str:
    """Region: credentials, AWS_DEFAULT_REGION, AWS_REGION, else us-east-1 (never AWS_S3_DEFAULT_REGION)."""
    env = os.environ if environ is None else environ
    return creds.region or env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or "us-east-1"


def is_aws_endpoint(endpoint: str | None) -> bool:
    """True for AWS itself (no endpoint, or an amazonaws.com host)."""
    if endpoint is None:
        return True
    host = urlparse(endpoint).hostname or ""
    return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


def client_config(
    creds: S3Credentials, transfer: TransferSettings, endpoint: str | None, *, unsigned: bool = False
) -> Config:
    """botocore Config: pool sized to the concurrency, low retries, compat checksums off AWS."""
    style = creds.addressing_style
    if style == "auto":
        style = "path" if endpoint and not is_aws_endpoint(endpoint) else "auto"
    options: dict[str, Any] = {
        "region_name": resolve_region(creds),
        "s3": {"addressing_style": style},
        "retries": {"total_max_attempts": 2, "mode": "standard"},
        "max_pool_connections": transfer.concurrency + 4,
        "connect_timeout": transfer.connect_timeout,
        "read_timeout": transfer.stall_timeout,
        "tcp_keepalive": True,
    }
    if unsigned or creds.anonymous:
        options["signature_version"] = UNSIGNED
    if not is_aws_endpoint(endpoint):
        # boto3 >= 1.36 adds CRC checksums that many S3-compatible stores reject.
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    return Config(**options)


def s3_tls(creds: S3Credentials, settings: TLSSettings | None = None) -> TLSConfig:
    """The endpoint's trust: its own ca_bundle/verify_tls, then the tls setting, then AWS_CA_BUNDLE and the rest."""
    return resolve_tls(settings, ca_bundle=creds.ca_bundle, verify=creds.verify_tls, own_variables=AWS_VARIABLES)


def etag_md5(etag: str | None) -> str | None:
    """A single-part ETag is the object's MD5; a multipart one (``hex-N``) is not."""
    clean = clean_etag(etag)
    if clean and len(clean) == 32 and set(clean) <= _HEX:
        return clean
    return None


def s3_multipart_etag(etag: str | None) -> bool:
    """Whether ``etag`` is an S3 multipart ETag: the MD5 of the part MD5s (32 hex digits), ``-``, the part count.

    Other tags with a dash (nginx's ``<mtime hex>-<size hex>``, all digits after the dash for many
    sizes) are opaque: a HEAD of their part 1 would only cost a round trip per object.
    """
    clean = clean_etag(etag)
    if not clean or "-" not in clean:
        return False
    head, tail = clean.rsplit("-", 1)
    return tail.isdigit() and etag_md5(head) is not None


def b64_to_hex_any(value: str) -> str | None:
    """base64 of a 32-byte sha256 to hex (``b64_to_hex`` only handles 16-byte MD5s)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 32 else b64_to_hex(value)
