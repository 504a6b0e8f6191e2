"""Every HTTPS client of the project against real servers behind a private CA.

Each server runs behind ``TLSProxy`` (real TLS with a CA generated per module). A client given the
CA (flag, setting, or one of the usual variables) works; one without it fails at once with the
permanent TLS error that names the CA it used and how to pass another.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from modelferry.cli.sync import run_sync
from modelferry.errors import EXIT_PERMANENT, TLSVerificationError
from modelferry.settings import (
    Credentials,
    HFCredentials,
    MiB,
    OCICredentials,
    S3Credentials,
    SyncSettings,
    TLSSettings,
    TransferSettings,
)
from modelferry.storage.cos import IAMTokenProvider
from modelferry.storage.hf import HFStore
from modelferry.storage.s3 import S3Store
from modelferry.tls import resolve_tls
from modelferry.uri import parse_uri
from tests.servers.hfhub import FakeHub, HubRepo
from tests.servers.iam import IAMServer
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, MotoS3, shared_servers
from tests.servers.tlsca import PrivateCA, make_private_ca
from tests.servers.tlsproxy import TLSProxy

TRANSFER = TransferSettings(part_size=MiB, concurrency=4, retries=1, backoff_base=0.01)
BIG = os.urandom(3 * MiB + 12345)  # several ranged parts
SMALL = b'{"model_type": "llama"}'


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    return make_private_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    """A CA that did not sign the servers' certificates."""
    return make_private_ca(tmp_path_factory.mktemp("other-ca"), name="someone else's CA")


@pytest.fixture(scope="module")
def s3(ca: PrivateCA) -> Iterator[tuple[MotoS3, TLSProxy]]:
    moto = shared_servers()[0]
    client = moto.create_bucket("tls-models")
    client.put_object(Bucket="tls-models", Key="llama/model.safetensors", Body=BIG)
    client.put_object(Bucket="tls-models", Key="llama/config.json", Body=SMALL)
    with TLSProxy(moto.endpoint, ca) as proxy:
        yield moto, proxy


def s3_creds(proxy: TLSProxy, **kw: object) -> S3Credentials:
    return S3Credentials(
        endpoint_url=proxy.url, access_key_id=ACCESS_KEY, secret_access_key=SecretStr(SECRET_KEY), **kw
    )


def sync_settings(proxy: TLSProxy, tls: TLSSettings | None = None, **kw: object) -> SyncSettings:
    creds = Credentials(s3=s3_creds(proxy, **kw))
    return SyncSettings(tls=tls or TLSSettings(), transfer=TRANSFER, source=creds, target=creds)


def read_all(store: S3Store | HFStore, path: str, size: int) -> bytes:
    return b"".join(bytes(c) for c in store.read(path, 0, size))


# -- S3: listing, ranged reads and uploads -------------------------------------------------------


def test_s3_download_and_upload_over_https_with_the_ca_bundle(
    s3: tuple[MotoS3, TLSProxy], ca: PrivateCA, tmp_path: Path
) -> None:
    moto, proxy = s3
    settings = sync_settings(proxy, TLSSettings(ca_bundle=str(ca.ca_file)))
    run_sync(settings, "s3://tls-models/llama", str(tmp_path / "down"), quiet=True)
    # The ranged reads (presigned URLs through our own HTTP client) went over TLS with the bundle.
    assert (tmp_path / "down" / "model.safetensors").read_bytes() == BIG
    assert (tmp_path / "down" / "config.json").read_bytes() == SMALL
    run_sync(settings, str(tmp_path / "down"), "s3://tls-models/copy", quiet=True)
    body = moto.client().get_object(Bucket="tls-models", Key="copy/model.safetensors")["Body"].read()
    assert body == BIG


@pytest.mark.parametrize(
    "variable", ["AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "MODELFERRY_TLS__CA_BUNDLE"]
)
def test_s3_ranged_reads_trust_the_usual_variables(
    s3: tuple[MotoS3, TLSProxy], ca: PrivateCA, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, proxy = s3
    monkeypatch.setenv(variable, str(ca.ca_file))
    store = S3Store(parse_uri("s3://tls-models/llama"), s3_creds(proxy), TRANSFER)
    assert store.fast_reader is not None
    assert {o.path for o in store.list()} == {"model.safetensors", "config.json"}
    assert read_all(store, "model.safetensors", len(BIG)) == BIG


def test_s3_trusts_a_directory_of_bundles(
    s3: tuple[MotoS3, TLSProxy], ca: PrivateCA, other_ca: PrivateCA, tmp_path: Path
) -> None:
    """A mounted ConfigMap with two keys (OpenShift AI's ca-bundle.crt and odh-ca-bundle.crt)."""
    _, proxy = s3
    mount = tmp_path / "ca"
    mount.mkdir()
    (mount / "ca-bundle.crt").write_bytes(other_ca.ca_file.read_bytes())
    (mount / "odh-ca-bundle.crt").write_bytes(ca.ca_file.read_bytes())
    store = S3Store(
        parse_uri("s3://tls-models/llama"), s3_creds(proxy), TRANSFER, tls=TLSSettings(ca_bundle=str(mount))
    )
    assert read_all(store, "config.json", len(SMALL)) == SMALL


def test_s3_no_verify_tls_reads_from_an_untrusted_endpoint(s3: tuple[MotoS3, TLSProxy]) -> None:
    _, proxy = s3
    store = S3Store(parse_uri("s3://tls-models/llama"), s3_creds(proxy), TRANSFER, tls=TLSSettings(verify=False))
    assert read_all(store, "model.safetensors", len(BIG)) == BIG


def test_s3_ranged_read_without_the_ca_is_a_permanent_tls_error(
    s3: tuple[MotoS3, TLSProxy], other_ca: PrivateCA
) -> None:
    _, proxy = s3
    store = S3Store(
        parse_uri("s3://tls-models/llama"), s3_creds(proxy), TRANSFER, tls=TLSSettings(ca_bundle=str(other_ca.ca_file))
    )
    with pytest.raises(TLSVerificationError) as err:
        read_all(store, "config.json", len(SMALL))
    assert err.value.exit_code == EXIT_PERMANENT
    assert str(other_ca.ca_file) in str(err.value) and "--ca-bundle" in (err.value.hint or "")
    assert "X-Amz-Signature" not in str(err.value)  # no presigned URL in the message
    with pytest.raises(TLSVerificationError):
        list(store.list())  # listing (botocore) fails the same way


def test_sync_cli_exits_3_naming_the_ca_used(s3: tuple[MotoS3, TLSProxy], other_ca: PrivateCA, tmp_path: Path) -> None:
    _, proxy = s3
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "MODELFERRY_TRANSFER__RETRIES": "5",
    }
    argv = [sys.executable, "-m", "modelferry", "sync", "s3://tls-models/llama", str(tmp_path / "out")]
    argv += ["--source-endpoint", proxy.url, "--ca-bundle", str(other_ca.ca_file)]
    started = proxy.accepted
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 3, done.stderr
    assert "TLS verification" in done.stderr and str(other_ca.ca_file) in done.stderr
    assert "--ca-bundle" in done.stderr
    assert proxy.accepted - started <= 3  # failed at once, not after five retries per part


# -- the Hub: huggingface_hub's client and our ranged fetcher -----------------------------------


@pytest.fixture(scope="module")
def hub(ca: PrivateCA) -> Iterator[TLSProxy]:
    with FakeHub(page_size=100) as fake:
        fake.add(HubRepo("org/tiny", {"config.json": SMALL, "model.safetensors": BIG}))
        with TLSProxy(fake.url, ca) as proxy:
            yield proxy


@pytest.mark.parametrize("how", ["setting", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_hub_metadata_and_ranged_files_trust_the_ca(
    hub: TLSProxy, ca: PrivateCA, how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how != "setting":
        monkeypatch.setenv(how, str(ca.ca_file))
    tls = TLSSettings(ca_bundle=str(ca.ca_file)) if how == "setting" else TLSSettings()
    settings = SyncSettings(tls=tls, transfer=TRANSFER, source=Credentials(hf=HFCredentials(endpoint=hub.url)))
    run_sync(settings, "hf://org/tiny", str(tmp_path / "m"), quiet=True)
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == BIG


def test_hub_without_the_ca_fails_once_with_the_tls_error(hub: TLSProxy, other_ca: PrivateCA) -> None:
    store = HFStore(
        parse_uri("hf://org/tiny"),
        HFCredentials(endpoint=hub.url),
        TRANSFER.model_copy(update={"retries": 5}),
        tls=TLSSettings(ca_bundle=str(other_ca.ca_file)),
    )
    started = hub.accepted
    with pytest.raises(TLSVerificationError) as err:
        store.resolve()
    assert str(other_ca.ca_file) in str(err.value)
    assert hub.accepted - started == 1  # permanent: not retried


# -- IBM IAM -------------------------------------------------------------------------------------


def test_iam_token_exchange_trusts_the_ca(ca: PrivateCA, other_ca: PrivateCA) -> None:
    with IAMServer(api_keys={"k-123"}) as iam, TLSProxy(iam.url, ca) as proxy:
        good = IAMTokenProvider(proxy.url, api_key="k-123", tls=resolve_tls(TLSSettings(ca_bundle=str(ca.ca_file))))
        assert good.token()
        bad = IAMTokenProvider(proxy.url, api_key="k-123", tls=resolve_tls(TLSSettings()))
        with pytest.raises(TLSVerificationError) as err:
            bad.token()
        assert "default trust store" in str(err.value) and "IBM IAM" in str(err.value)


# -- Oracle Object Storage (the oci SDK) -----------------------------------------------------------


def test_oracle_sdk_trusts_the_setting_over_requests_variables(
    ca: PrivateCA, other_ca: PrivateCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelferry.storage.oracle import OracleStore
    from tests.integration.test_oracle import write_oci_config
    from tests.servers.oracle import OracleServer

    config = write_oci_config(tmp_path)
    # requests lets REQUESTS_CA_BUNDLE win over Session.verify; the setting must win here.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other_ca.ca_file))
    with OracleServer("nstls") as server, TLSProxy(server.endpoint, ca) as proxy:
        server.create_bucket("models")
        server.put("models", "llama/config.json", SMALL)
        uri = parse_uri("oci://n/nstls/b/models/o/llama")
        creds = OCICredentials(config_file=str(config), endpoint=proxy.url)
        store = OracleStore(uri, creds, TRANSFER, tls=TLSSettings(ca_bundle=str(ca.ca_file)))
        assert [o.path for o in store.list()] == ["config.json"]
        assert b"".join(store.read("config.json", 0, len(SMALL))) == SMALL
        untrusting = OracleStore(uri, creds, TRANSFER)  # REQUESTS_CA_BUNDLE: the wrong CA
        with pytest.raises(TLSVerificationError) as err:
            list(untrusting.list())
        assert "REQUESTS_CA_BUNDLE" in str(err.value)


# -- OpenBao (Vault transit) -----------------------------------------------------------------------


def test_vault_transit_trusts_vault_cacert(ca: PrivateCA, other_ca: PrivateCA, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelferry.enigma.kms.vault import VaultTransitProvider
    from modelferry.enigma.settings import VaultSettings
    from tests.servers.vault import bao_binary, bao_dev_server

    if bao_binary() is None:
        pytest.skip("the bao binary is not installed")
    with bao_dev_server() as bao, TLSProxy(bao.address, ca) as proxy:
        bao.enable_transit()
        bao.create_key("tls-key")
        settings = VaultSettings(address=proxy.url, token=SecretStr(bao.token), key_name="tls-key")
        monkeypatch.setenv("VAULT_CACERT", str(ca.ca_file))
        plain, block = VaultTransitProvider(settings).new_data_key()
        assert VaultTransitProvider(settings).unwrap(block) == plain
        monkeypatch.setenv("VAULT_CACERT", str(other_ca.ca_file))
        with pytest.raises(TLSVerificationError) as err:
            VaultTransitProvider(settings).new_data_key()
        assert "VAULT_CACERT" in str(err.value)


# -- MLflow ----------------------------------------------------------------------------------------


def test_mlflow_streamer_trusts_the_ca(
    ca: PrivateCA, other_ca: PrivateCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelferry.sidecar.embedded import EmbeddedMlflow
    from modelferry.sidecar.metrics import MetricRecord
    from modelferry.sidecar.mlflow_stream import MlflowStreamer
    from modelferry.sidecar.settings import MlflowSettings
    from tests.servers.training import metric_history

    for name in ("MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_INSECURE_TLS"):
        monkeypatch.delenv(name, raising=False)  # restored after the test: the streamer sets them
    server = EmbeddedMlflow(tmp_path / "mlflow")
    server.start()
    try:
        with TLSProxy(server.url, ca) as proxy:
            fast = {"flush_interval": 0.05, "retry_interval": 0.1, "experiment_name": "tls"}
            monkeypatch.setenv("MODELFERRY_TLS__CA_BUNDLE", str(ca.ca_file))
            streamer = MlflowStreamer(MlflowSettings(tracking_uri=proxy.url, **fast))
            run_id = streamer.start(wait_for_run=30)
            assert run_id
            streamer.put([MetricRecord(step=1, values={"loss": 2.5}, timestamp_ms=int(time.time() * 1000))])
            assert streamer.finish("FINISHED")
            assert metric_history(server.url, run_id, "loss") == [(1, 2.5)]

            monkeypatch.setenv("MODELFERRY_TLS__CA_BUNDLE", str(other_ca.ca_file))
            failing = MlflowStreamer(MlflowSettings(tracking_uri=proxy.url, **fast))
            assert failing.start(wait_for_run=0.1) is None
            deadline = time.monotonic() + 30
            while failing.errors == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "TLS verification" in (failing.last_error or "")
            assert str(other_ca.ca_file) in (failing.last_error or "")
            failing.finish("FAILED", timeout=0.5)
    finally:
        server.stop()


# -- the Kubernetes API (the emulator) -------------------------------------------------------------


def test_kubernetes_client_trusts_the_ca_for_an_https_api_url(ca: PrivateCA, other_ca: PrivateCA) -> None:
    from modelferry.controller.kube.client import SECRETS, Kube, build_api_client
    from tests.servers.kube import ThreadedKubeEmulator

    async def get(url: str, bundle: Path) -> object:
        kube = Kube(await build_api_client(api_url=url, tls=resolve_tls(TLSSettings(ca_bundle=str(bundle)))))
        try:
            return await kube.get(SECRETS, "default", "missing")
        finally:
            await kube.close()

    with ThreadedKubeEmulator() as emu, TLSProxy(emu.url, ca) as proxy:
        assert asyncio.run(get(proxy.url, ca.ca_file)) is None
        with pytest.raises(TLSVerificationError) as err:
            asyncio.run(get(proxy.url, other_ca.ca_file))
        assert "Kubernetes API" in str(err.value) and str(other_ca.ca_file) in str(err.value)
