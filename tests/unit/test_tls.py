"""The TLS trust resolution: order of sources, bundle directories, and which failures are permanent."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from botocore import exceptions as bx
from urllib3.exceptions import MaxRetryError, SSLError

from modelferry.errors import PermanentError, RetryableError, TLSVerificationError, UsageError
from modelferry.settings import SyncSettings, TLSSettings
from modelferry.storage.s3_errors import translate
from modelferry.tls import (
    OP_ENABLE_KTLS,
    TLSConfig,
    combined_bundle,
    failure_detail,
    is_tls_failure,
    resolve_tls,
    settings_from_env,
)
from tests.servers.tlsca import make_private_ca


@pytest.fixture
def pems(tmp_path: Path) -> tuple[Path, Path]:
    first = make_private_ca(tmp_path / "a").ca_file
    second = make_private_ca(tmp_path / "b", name="second CA").ca_file
    return first, second


def test_order_endpoint_then_setting_then_own_variable_then_usual_variables(pems: tuple[Path, Path]) -> None:
    a, b = (str(p) for p in pems)
    env = {"REQUESTS_CA_BUNDLE": a, "SSL_CERT_FILE": b, "AWS_CA_BUNDLE": b}
    assert resolve_tls(TLSSettings(), environ=env).ca == a  # AWS_CA_BUNDLE is only for AWS clients
    assert resolve_tls(TLSSettings(), environ=env, own_variables=("AWS_CA_BUNDLE",)).origin == "AWS_CA_BUNDLE"
    assert resolve_tls(TLSSettings(ca_bundle=b), environ=env).ca == b
    assert resolve_tls(TLSSettings(ca_bundle=b), ca_bundle=a, environ=env).ca == a
    assert resolve_tls(TLSSettings(), environ={"SSL_CERT_DIR": a}).origin == "SSL_CERT_DIR"
    assert resolve_tls(TLSSettings(), environ={}).ca is None
    off = resolve_tls(TLSSettings(verify=False, ca_bundle=a), environ=env)
    assert not off.verify and off.verify_arg() is False and "off" in off.describe()
    assert not resolve_tls(TLSSettings(), verify=False, environ=env).verify


def test_settings_from_env_and_the_sync_settings_tree(monkeypatch: pytest.MonkeyPatch, pems: tuple[Path, Path]) -> None:
    monkeypatch.setenv("MODELFERRY_TLS__CA_BUNDLE", str(pems[0]))
    monkeypatch.setenv("MODELFERRY_TLS__VERIFY", "false")
    assert settings_from_env() == TLSSettings(ca_bundle=str(pems[0]), verify=False)
    assert SyncSettings().tls == TLSSettings(ca_bundle=str(pems[0]), verify=False)
    monkeypatch.setenv("MODELFERRY_TLS__VERIFY", "maybe")
    with pytest.raises(UsageError):
        settings_from_env()


def test_a_missing_bundle_is_a_usage_error_naming_its_source(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        resolve_tls(TLSSettings(), environ={"REQUESTS_CA_BUNDLE": str(tmp_path / "nope.pem")})
    assert "REQUESTS_CA_BUNDLE" in str(err.value) and err.value.exit_code == 2


def test_a_directory_becomes_one_bundle_with_every_pem(tmp_path: Path, pems: tuple[Path, Path]) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    (mount / "ca-bundle.crt").write_bytes(pems[0].read_bytes())
    (mount / "odh-ca-bundle.crt").write_bytes(pems[1].read_bytes())
    (mount / "README").write_text("not a certificate")
    combined = Path(combined_bundle(str(mount)))
    assert combined.read_bytes().count(b"BEGIN CERTIFICATE") == 2
    ctx = resolve_tls(TLSSettings(ca_bundle=str(mount)), environ={}).ssl_context()
    assert len(ctx.get_ca_certs()) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError):
        combined_bundle(str(empty))


def test_certificate_failures_are_permanent_dropped_handshakes_are_not() -> None:
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert is_tls_failure(MaxRetryError(None, "https://h/x?X-Amz-Signature=s3cr3t", reason=SSLError(verify)))  # type: ignore[arg-type]
    assert is_tls_failure(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"))
    assert not is_tls_failure(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    assert not is_tls_failure(ConnectionResetError(104, "reset"))
    detail = failure_detail(MaxRetryError(None, "https://h/x?X-Amz-Signature=s3cr3t", reason=SSLError("boom")))  # type: ignore[arg-type]
    assert "s3cr3t" not in detail


def test_botocore_tls_errors_translate_by_cause(pems: tuple[Path, Path]) -> None:
    tls = resolve_tls(TLSSettings(ca_bundle=str(pems[0])), environ={})
    cert = bx.SSLError(
        endpoint_url="https://minio:9000", error=ssl.SSLCertVerificationError(1, "certificate verify failed")
    )
    err = translate(cert, bucket="b", what="s3://b/k", endpoint="https://minio:9000", tls=tls)
    assert isinstance(err, TLSVerificationError) and isinstance(err, PermanentError)
    assert str(pems[0]) in str(err) and "--ca-bundle" in (err.hint or "")
    eof = bx.SSLError(endpoint_url="https://minio:9000", error=ssl.SSLEOFError(8, "EOF occurred"))
    assert isinstance(translate(eof, bucket="b", what="s3://b/k", endpoint="https://minio:9000"), RetryableError)


def test_the_bulk_context_is_a_fresh_context_with_kernel_tls_asked_for(pems: tuple[Path, Path], tmp_path: Path) -> None:
    tls = TLSConfig(ca=str(pems[0]), origin="test")
    first, second = tls.bulk_context(), tls.bulk_context()
    assert first is not second and first is not tls.ssl_context()  # never the shared, cached one
    assert first.options & OP_ENABLE_KTLS and not tls.ssl_context().options & OP_ENABLE_KTLS
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    assert len(first.get_ca_certs()) == 1
    off = TLSConfig(verify=False, origin="test").bulk_context()
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(UsageError, match="cannot load the CA bundle"):
        TLSConfig(ca=str(junk), origin="test").bulk_context()
