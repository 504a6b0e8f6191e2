"""IBM COS: HMAC, API key and one-time passcode against moto plus an IAM stand-in."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelferry.cli.main import main
from modelferry.errors import AccessDeniedError, PermanentError, UsageError
from modelferry.settings import COSCredentials, Credentials, MiB, S3Credentials, TransferSettings
from modelferry.storage.cos import COSStore, IAMTokenProvider, cos_endpoint, instance_crn, open_cos_store
from modelferry.storage.s3 import S3Store
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri
from tests.servers.iam import IAMServer
from tests.servers.moto_session import clean_moto
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, MotoS3

BUCKET_CRN = "crn:v1:bluemix:public:cloud-object-storage:global:a/acct123:inst-456:bucket:models"
API_KEY = "ibm-api-key-0123456789"
PASSCODE = "Xy12Ab34Cd"


@pytest.fixture
def moto() -> Iterator[MotoS3]:
    yield from clean_moto()


@pytest.fixture
def iam() -> Iterator[IAMServer]:
    with IAMServer(api_keys={API_KEY}, passcodes={PASSCODE}) as server:
        yield server


def transfer() -> TransferSettings:
    return TransferSettings(part_size=5 * MiB, concurrency=4, retries=1, backoff_base=0.01)


def fill_source(moto: MotoS3) -> dict[str, bytes]:
    client = moto.create_bucket("cos-models")
    files = {"config.json": b"{}", "model.safetensors": os.urandom(11 * MiB)}
    for rel, data in files.items():
        client.put_object(Bucket="cos-models", Key=f"granite/{rel}", Body=data)
    moto.create_bucket("s3-target")
    return files


def capture_headers(store: S3Store) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []

    def grab(request: Any, **_: Any) -> None:
        seen.append(dict(request.headers))

    store.client.meta.events.register("before-send.s3", grab)
    return seen


def test_instance_crn_and_endpoints() -> None:
    assert instance_crn(BUCKET_CRN) == "crn:v1:bluemix:public:cloud-object-storage:global:a/acct123:inst-456::"
    already = "crn:v1:bluemix:public:cloud-object-storage:global:a/acct123:inst-456::"
    assert instance_crn(already) == already
    assert cos_endpoint("us-geo") == "https://s3.us.cloud-object-storage.appdomain.cloud"
    assert cos_endpoint("eu-de") == "https://s3.eu-de.cloud-object-storage.appdomain.cloud"
    with pytest.raises(UsageError, match="region"):
        cos_endpoint(None)


def test_cos_to_s3_with_api_key(moto: MotoS3, iam: IAMServer, tmp_path: Path) -> None:
    files = fill_source(moto)
    creds = Credentials(
        cos=COSCredentials(api_key=API_KEY, iam_endpoint=iam.url, instance_crn=BUCKET_CRN, endpoint_url=moto.endpoint)
    )
    source = open_cos_store(parse_uri("cos://cos-models/granite"), creds, transfer())
    assert isinstance(source, COSStore)
    headers = capture_headers(source)
    target = S3Store(
        parse_uri("s3://s3-target/granite"),
        S3Credentials(endpoint_url=moto.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY),
        transfer(),
    )
    result = sync(source, target, transfer())
    assert result.files_copied == 2
    assert iam.state.grants["urn:ibm:params:oauth:grant-type:apikey"] == 1
    assert headers and all(h["Authorization"].startswith("Bearer at-") for h in headers)
    assert all(h["ibm-service-instance-id"].endswith(":inst-456::") for h in headers)
    assert not any("AWS4-HMAC" in h["Authorization"] for h in headers)
    client = moto.client()
    for rel, data in files.items():
        assert client.get_object(Bucket="s3-target", Key=f"granite/{rel}")["Body"].read() == data


def test_cos_to_s3_with_passcode_exchanged_once(moto: MotoS3, iam: IAMServer, tmp_path: Path) -> None:
    fill_source(moto)
    iam.state.expires_in = 1  # forces a refresh on every request: must use the refresh token, not the passcode
    creds = Credentials(
        cos=COSCredentials(passcode=PASSCODE, iam_endpoint=iam.url, instance_crn=BUCKET_CRN, endpoint_url=moto.endpoint)
    )
    source = open_cos_store(parse_uri("cos://cos-models/granite"), creds, transfer())
    target = S3Store(
        parse_uri("s3://s3-target/granite"),
        S3Credentials(endpoint_url=moto.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY),
        transfer(),
    )
    result = sync(source, target, transfer())
    assert result.files_copied == 2
    assert iam.state.grants["urn:ibm:params:oauth:grant-type:passcode"] == 1
    assert iam.state.grants["refresh_token"] >= 1


def test_second_passcode_exchange_is_refused_without_calling_iam(iam: IAMServer) -> None:
    provider = IAMTokenProvider(iam.url, passcode=PASSCODE)
    provider.token()
    provider._refresh = None  # as if IAM had sent no refresh token
    provider._token = None
    with pytest.raises(PermanentError, match="single-use") as exc:
        provider.token()
    assert "new passcode" in str(exc.value)
    assert iam.state.grants["urn:ibm:params:oauth:grant-type:passcode"] == 1


def test_passcode_failure_is_permanent_and_not_retried(iam: IAMServer) -> None:
    iam.state.fail_status = 503
    provider = IAMTokenProvider(iam.url, passcode=PASSCODE)
    with pytest.raises(PermanentError, match="cannot be retried"):
        provider.token()
    with pytest.raises(PermanentError, match="single-use"):
        provider.token()
    assert iam.state.grants["urn:ibm:params:oauth:grant-type:passcode"] == 1


def test_api_key_token_refreshed_before_expiry(iam: IAMServer) -> None:
    now = [1000.0]
    provider = IAMTokenProvider(iam.url, api_key=API_KEY, clock=lambda: now[0])
    first = provider.token()
    assert provider.token() == first
    now[0] += 3600 - 200  # inside the refresh margin
    assert provider.token() != first
    assert iam.state.grants["urn:ibm:params:oauth:grant-type:apikey"] == 2


def test_bad_api_key_is_access_denied(iam: IAMServer) -> None:
    with pytest.raises(AccessDeniedError, match="refused"):
        IAMTokenProvider(iam.url, api_key="wrong-key-123456").token()


def test_cos_with_hmac_keys_is_plain_s3(moto: MotoS3) -> None:
    fill_source(moto)
    creds = Credentials(
        s3=S3Credentials(access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY),
        cos=COSCredentials(endpoint_url=moto.endpoint),
    )
    store = open_cos_store(parse_uri("cos://cos-models/granite"), creds, transfer())
    assert not isinstance(store, COSStore)
    assert sorted(i.path for i in store.list()) == ["config.json", "model.safetensors"]


def test_cos_without_credentials_is_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="no credentials"):
        open_cos_store(parse_uri("cos://b-1/p"), Credentials(cos=COSCredentials(region="us-geo")), transfer())


def test_cli_cos_to_local_with_api_key(
    moto: MotoS3, iam: IAMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = fill_source(moto)
    monkeypatch.setenv("IBMCLOUD_API_KEY", API_KEY)
    monkeypatch.setenv("MODELFERRY_SOURCE__COS__IAM_ENDPOINT", iam.url)
    monkeypatch.setenv("MODELFERRY_SOURCE__COS__ENDPOINT_URL", moto.endpoint)
    monkeypatch.setenv("MODELFERRY_SOURCE__COS__INSTANCE_CRN", BUCKET_CRN)
    term = tmp_path / "term.json"
    with pytest.raises(SystemExit) as exc:
        main(["sync", "cos://cos-models/granite", str(tmp_path / "dst"), "--termination-log", str(term)])
    assert exc.value.code == 0, term.read_text()
    assert json.loads(term.read_text())["files_copied"] == 2
    for rel, data in files.items():
        assert (tmp_path / "dst" / rel).read_bytes() == data
