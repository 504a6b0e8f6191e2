"""Enigma settings, the OME-Agent config model, provider selection and key-block parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelferry.enigma.format import DEFAULT_CHUNK_SIZE, KeyBlock, check_chunk_size, parse_prefix
from modelferry.enigma.kms import make_provider
from modelferry.enigma.kms.vault import classify
from modelferry.enigma.omeconfig import load_ome_config
from modelferry.enigma.settings import EnigmaSettings
from modelferry.errors import AccessDeniedError, IntegrityError, NotFoundError, RetryableError, UsageError
from modelferry.settings import SyncSettings, warn_unknown_env


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFERRY_ENIGMA__PROVIDER", "vault")
    monkeypatch.setenv("MODELFERRY_ENIGMA__VAULT__KEY_NAME", "models")
    monkeypatch.setenv("MODELFERRY_ENIGMA__AWS__ENCRYPTION_CONTEXT", '{"team": "ml"}')
    settings = EnigmaSettings()
    assert settings.provider == "vault"
    assert settings.vault.key_name == "models"
    assert settings.aws.encryption_context == {"team": "ml"}
    assert settings.chunk_size == DEFAULT_CHUNK_SIZE


def test_sync_does_not_call_enigma_variables_unknown() -> None:
    env = {"MODELFERRY_ENIGMA__LOCAL__KEY_FILE": "/k", "MODELFERRY_TRANSFR__X": "1"}
    assert warn_unknown_env(SyncSettings, environ=env) == ["MODELFERRY_TRANSFR__X"]


def test_ome_config_yaml_and_env_override(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        'local_path: "/models/x"\nauth_type: "InstancePrincipal"\nvault_id: "v1"\nkey_name: "command_r"\n'
        'compartment_id: "c1"\nhf_token: "ignored"\nsource: {bucket_name: b}\n'
    )
    config = load_ome_config(str(path), environ={"OME_AGENT_VAULT_ID": "v2"})
    assert config.path == "/models/x"
    settings = config.apply(EnigmaSettings())
    assert settings.provider == "oci"
    assert settings.oci.auth_type == "instance_principal"
    assert settings.oci.vault_id == "v2"
    assert settings.oci.key_name == "command_r"
    assert settings.oci.secret_name is None  # the provider defaults it to <key_name>-dek


def test_ome_config_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        load_ome_config(str(tmp_path / "missing.yaml"))
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(UsageError, match="mapping"):
        load_ome_config(str(tmp_path / "list.yaml"))
    (tmp_path / "nopath.yaml").write_text("key_name: k\n")
    with pytest.raises(UsageError, match="local_path"):
        _ = load_ome_config(str(tmp_path / "nopath.yaml"), environ={}).path
    (tmp_path / "auth.yaml").write_text("local_path: /x\nauth_type: Magic\n")
    with pytest.raises(UsageError, match="auth_type"):
        load_ome_config(str(tmp_path / "auth.yaml"), environ={}).apply(EnigmaSettings())


def test_provider_selection_errors() -> None:
    with pytest.raises(UsageError, match="needs a key file"):
        make_provider("local", EnigmaSettings())
    with pytest.raises(UsageError, match="unknown KMS provider"):
        make_provider("gcp", EnigmaSettings())


def test_vault_error_classification() -> None:
    assert isinstance(classify(403, ["permission denied"], "decrypt", "k"), AccessDeniedError)
    assert isinstance(classify(503, ["Vault is sealed"], "decrypt", "k"), RetryableError)
    assert isinstance(classify(400, ["encryption key not found"], "decrypt", "k"), NotFoundError)
    assert isinstance(classify(400, ["cipher: message authentication failed"], "decrypt", "k"), IntegrityError)
    retired = classify(400, ["ciphertext or signature version is disallowed by policy (too old)"], "decrypt", "k")
    assert isinstance(retired, AccessDeniedError) and "retired" in str(retired)


def test_key_block_and_prefix_parsing() -> None:
    block = KeyBlock("local", "id", b"\x00\x01", {"a": 1})
    assert KeyBlock.from_bytes(block.to_bytes()) == block
    with pytest.raises(IntegrityError, match="corrupt enigma key block"):
        KeyBlock.from_bytes(b"{not json")
    with pytest.raises(IntegrityError, match="not an enigma-encrypted file"):
        parse_prefix(b"PK\x03\x04" + b"\x00" * 60)
    with pytest.raises(UsageError, match="chunk size"):
        check_chunk_size(100)
