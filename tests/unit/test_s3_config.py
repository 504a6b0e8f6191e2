"""Pure parts of the S3 backend: endpoint/region resolution, client config, error translation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore import UNSIGNED
from botocore import exceptions as bx

from modelferry.errors import (
    AccessDeniedError,
    NotFoundError,
    PermanentError,
    RetryableError,
    StalledError,
    ThrottledError,
)
from modelferry.settings import S3Credentials, TLSSettings, TransferSettings
from modelferry.storage.base import ObjectInfo
from modelferry.storage.s3_config import (
    client_config,
    etag_md5,
    is_aws_endpoint,
    resolve_endpoint,
    resolve_region,
    s3_tls,
)
from modelferry.storage.s3_errors import BucketNotFoundError, translate


def client_error(code: str, status: int, headers: dict[str, str] | None = None) -> bx.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "msg"},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
    }
    return bx.ClientError(response, "GetObject")


def test_endpoint_falls_back_to_env_and_adds_scheme() -> None:
    assert resolve_endpoint(S3Credentials(endpoint_url="http://x:9000/"), {}) == "http://x:9000"
    assert resolve_endpoint(S3Credentials(), {"AWS_ENDPOINT_URL": "http://a"}) == "http://a"
    assert resolve_endpoint(S3Credentials(), {"AWS_S3_ENDPOINT": "minio.local:9000"}) == "https://minio.local:9000"
    assert resolve_endpoint(S3Credentials(), {}) is None


def test_region_order_never_uses_aws_s3_default_region() -> None:
    assert resolve_region(S3Credentials(region="eu-west-1"), {"AWS_DEFAULT_REGION": "x"}) == "eu-west-1"
    assert resolve_region(S3Credentials(), {"AWS_DEFAULT_REGION": "a", "AWS_REGION": "b"}) == "a"
    assert resolve_region(S3Credentials(), {"AWS_REGION": "b"}) == "b"
    assert resolve_region(S3Credentials(), {"AWS_S3_DEFAULT_REGION": "wrong"}) == "us-east-1"


def test_client_config_for_custom_endpoint() -> None:
    cfg = client_config(S3Credentials(), TransferSettings(concurrency=32), "http://minio:9000")
    assert cfg.s3 == {"addressing_style": "path"}
    assert cfg.max_pool_connections == 36
    assert cfg.retries == {"total_max_attempts": 2, "mode": "standard"}
    assert cfg.request_checksum_calculation == "when_required"
    assert cfg.response_checksum_validation == "when_required"
    aws = client_config(S3Credentials(anonymous=True), TransferSettings(), None)
    assert aws.s3 == {"addressing_style": "auto"} and aws.signature_version is UNSIGNED
    assert is_aws_endpoint("https://s3.eu-west-1.amazonaws.com") and not is_aws_endpoint(
        "https://s3.us.cloud-object-storage.appdomain.cloud"
    )


def test_s3_tls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    own, env = tmp_path / "own.pem", tmp_path / "env.pem"
    own.write_text("x")
    env.write_text("x")
    assert s3_tls(S3Credentials(verify_tls=False)).verify_arg() is False
    assert s3_tls(S3Credentials(ca_bundle=str(own))).verify_arg() == str(own)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(env))
    assert s3_tls(S3Credentials()).verify_arg() == str(env)
    assert s3_tls(S3Credentials(), TLSSettings(ca_bundle=str(own))).origin.startswith("--ca-bundle")


def test_etag_md5_only_for_single_part() -> None:
    assert etag_md5('"5d41402abc4b2a76b9719d911017c592"') == "5d41402abc4b2a76b9719d911017c592"
    assert etag_md5('"5d41402abc4b2a76b9719d911017c592-3"') is None
    assert etag_md5(None) is None


def test_only_md5_dash_count_is_a_multipart_etag() -> None:
    def parts(etag: str | None) -> int | None:
        return ObjectInfo(path="x", size=1, etag=etag).multipart_count

    assert parts('"5d41402abc4b2a76b9719d911017c592-3"') == 3
    assert parts("5D41402ABC4B2A76B9719D911017C592-12") == 12
    # nginx's "<mtime hex>-<size hex>" with an all-digit size: an opaque tag, no HEAD per object for it
    assert parts('"6930a1b2-2000"') is None
    assert parts("5d41402abc4b2a76b9719d911017c592") is None
    assert parts("5d41402abc4b2a76b9719d911017c592-") is None
    assert parts("zz41402abc4b2a76b9719d911017c592-2") is None
    assert parts(None) is None


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("NoSuchBucket", 404, BucketNotFoundError),
        ("NoSuchKey", 404, NotFoundError),
        ("404", 404, NotFoundError),
        ("AccessDenied", 403, AccessDeniedError),
        ("InvalidAccessKeyId", 403, AccessDeniedError),
        ("SignatureDoesNotMatch", 403, AccessDeniedError),
        ("403", 403, AccessDeniedError),
        ("SlowDown", 503, ThrottledError),
        ("", 429, ThrottledError),
        ("InternalError", 500, RetryableError),
        ("PreconditionFailed", 412, PermanentError),
        ("Weird", 400, PermanentError),
    ],
)
def test_client_errors_translate(code: str, status: int, kind: type[Exception]) -> None:
    err = translate(client_error(code, status), bucket="bkt", what="s3://bkt/p/x", endpoint="http://e")
    assert type(err) is kind
    if kind is BucketNotFoundError:
        assert "bkt" in str(err)
    if kind is AccessDeniedError:
        assert "AWS_ACCESS_KEY_ID" in str(err)


def test_retry_after_is_kept() -> None:
    err = translate(client_error("SlowDown", 503, {"retry-after": "7"}), bucket="b", what="w", endpoint="e")
    assert isinstance(err, ThrottledError) and err.retry_after == 7.0


def test_network_errors_translate() -> None:
    kw: dict[str, Any] = {"bucket": "b", "what": "s3://b/x", "endpoint": "http://e"}
    assert type(translate(bx.ReadTimeoutError(endpoint_url="http://e"), **kw)) is StalledError
    assert type(translate(bx.EndpointConnectionError(endpoint_url="http://e"), **kw)) is RetryableError
    assert type(translate(bx.NoCredentialsError(), **kw)) is AccessDeniedError
