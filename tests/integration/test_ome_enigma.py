"""Weights encrypted for OME (one AES-256-GCM message per file, data key in the Vault secret
``<key_name>-dek``) decrypt with ``enigma --config X --debug`` (seed 000, verbatim), ``enigma decrypt``,
``sync --decrypt`` and the agent's ``spec.storage.decrypt``, against the Oracle Vault/KMS stand-in."""

from __future__ import annotations

import base64
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from modelferry.cli.main import main
from modelferry.controller.agent.tasks import TaskType
from modelferry.enigma import omeformat
from tests.integration.test_agent_gopher import basemodel, make, task
from tests.servers.oracle_kms import OracleKMSServer, oracle_kms_server

MiB = 1024 * 1024


def ome_encrypt(data: bytes, dek: bytes) -> bytes:
    """What OME-Agent writes: nonce || AES-256-GCM(ciphertext || tag), no associated data."""
    nonce = os.urandom(12)
    return nonce + AESGCM(dek).encrypt(nonce, data, None)


def safetensors_bytes(payload: int) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [payload], "data_offsets": [0, payload]}}).encode()
    return struct.pack("<Q", len(header)) + header + os.urandom(payload)


class Model:
    def __init__(self, server: OracleKMSServer, oci_config: str, dek: bytes, clear: dict[str, bytes]) -> None:
        self.server, self.oci_config, self.dek, self.clear = server, oci_config, dek, clear

    def env(self) -> dict[str, str]:
        state = self.server.state
        return {
            "MODELFERRY_ENIGMA__PROVIDER": "oci",
            "MODELFERRY_ENIGMA__OCI__CONFIG_FILE": self.oci_config,
            "MODELFERRY_ENIGMA__OCI__VAULT_ENDPOINT": self.server.endpoint,
            "MODELFERRY_ENIGMA__OCI__SECRETS_ENDPOINT": self.server.endpoint,
            "MODELFERRY_ENIGMA__OCI__VAULT_ID": state.vault_id,
            "MODELFERRY_ENIGMA__OCI__COMPARTMENT_ID": state.compartment_id,
            "MODELFERRY_ENIGMA__OCI__KEY_NAME": "command_r",
        }


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Model, Path]]:
    """A model directory as OME-Agent leaves it: weights encrypted, config.json in clear."""
    for name in list(os.environ):
        if name.startswith(("MODELFERRY_ENIGMA__", "OME_AGENT_")):
            monkeypatch.delenv(name)
    with oracle_kms_server() as server:
        key = server.state.add_key("command_r")
        dek = os.urandom(32)
        server.state.secrets["command_r-dek"] = {
            "id": "ocid1.vaultsecret.oc1.test.dek",
            "secretName": "command_r-dek",
            "vaultId": server.state.vault_id,
            "keyId": key.id,
            "compartmentId": server.state.compartment_id,
            "content": base64.b64encode(server.state.seal(key, dek).encode()).decode(),
            "lifecycleState": "ACTIVE",
        }
        clear = {
            "model-00001-of-00002.safetensors": safetensors_bytes(3 * MiB + 7),
            "model-00002-of-00002.safetensors": safetensors_bytes(1 * MiB),
            "tokenizer.model": os.urandom(100_000),
            "config.json": b'{"model_type": "cohere"}',
        }
        directory = tmp_path / "enc"
        directory.mkdir()
        for name, data in clear.items():
            (directory / name).write_bytes(data if name == "config.json" else ome_encrypt(data, dek))
        yield Model(server, server.write_oci_config(str(tmp_path)), dek, clear), directory


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as done:
        main(argv)
    return int(done.value.code or 0)


def assert_same(directory: Path, clear: dict[str, bytes]) -> None:
    for name, data in clear.items():
        assert (directory / name).read_bytes() == data, name


def test_seed_enigma_command_line_decrypts_in_place(
    model: tuple[Model, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    m, directory = model
    config = tmp_path / "ome-agent.yaml"  # seed 000's sample keys
    config.write_text(
        f'model_store_directory: "{directory}"\nlocal_path: "{directory}"\n'
        'auth_type: &default_auth_type "UserPrincipal"\nprofile: "DEFAULT"\n'
        f'compartment_id: "{m.server.state.compartment_id}"\nvault_id: "{m.server.state.vault_id}"\n'
        'key_name: "command_r"\nsecret_name: "command_r-dek"\n'
    )
    monkeypatch.setenv("MODELFERRY_ENIGMA__OCI__CONFIG_FILE", m.oci_config)
    monkeypatch.setenv("MODELFERRY_ENIGMA__OCI__VAULT_ENDPOINT", m.server.endpoint)
    monkeypatch.setenv("MODELFERRY_ENIGMA__OCI__SECRETS_ENDPOINT", m.server.endpoint)
    # The seed's command line, verbatim after the program name.
    assert run(["enigma", "--config", str(config), "--debug"]) == 0
    assert_same(directory, m.clear)
    assert " DEBUG " in capfd.readouterr().err
    # Nothing generated: OME's data key was only read.
    assert "POST /20180608/generateDataEncryptionKey" not in m.server.state.calls


def test_enigma_decrypt_and_tampering(
    model: tuple[Model, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m, directory = model
    for name, value in m.env().items():
        monkeypatch.setenv(name, value)
    assert run(["enigma", "decrypt", str(directory), "--output", str(tmp_path / "out"), "--skip-plain"]) == 0
    assert_same(tmp_path / "out", {k: v for k, v in m.clear.items() if k != "config.json"})  # clear: left alone
    # One flipped ciphertext byte (or a truncated file): exit 3, no plaintext under the final name.
    bad = tmp_path / "bad"
    bad.mkdir()
    sealed = bytearray((directory / "tokenizer.model").read_bytes())
    sealed[len(sealed) // 2] ^= 1
    (bad / "tokenizer.model").write_bytes(bytes(sealed))
    assert run(["enigma", "decrypt", str(bad), "--output", str(tmp_path / "bad-out")]) == 3
    assert not (tmp_path / "bad-out" / "tokenizer.model").exists()
    (bad / "tokenizer.model").write_bytes((directory / "tokenizer.model").read_bytes()[:-1])
    assert run(["enigma", "decrypt", str(bad), "--output", str(tmp_path / "bad-out")]) == 3
    assert not any(p.is_file() for p in (tmp_path / "bad-out").rglob("*"))


def test_sync_decrypt(model: tuple[Model, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m, directory = model
    for name, value in m.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODELFERRY_TRANSFER__PART_SIZE", str(MiB))  # several ranged reads per file
    monkeypatch.setenv("MODELFERRY_TRANSFER__FREE_SPACE_MARGIN", "0")
    assert run(["sync", "--decrypt", str(directory), str(tmp_path / "plain")]) == 0
    assert_same(tmp_path / "plain", m.clear)
    manifest = json.loads((tmp_path / "plain/.modelferry/manifest.json").read_text())
    assert manifest  # written last, over the plaintext
    # Tampered: the authentication pass fails before any plaintext is written.
    sealed = bytearray((directory / "model-00002-of-00002.safetensors").read_bytes())
    sealed[-20] ^= 1
    (directory / "model-00002-of-00002.safetensors").write_bytes(bytes(sealed))
    assert run(["sync", "--decrypt", str(directory), str(tmp_path / "plain2")]) == 3
    assert not (tmp_path / "plain2" / "model-00002-of-00002.safetensors").exists()


def test_agent_storage_decrypt(model: tuple[Model, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m, directory = model
    for name, value in m.env().items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "models"
    root.mkdir()
    gopher, sink, _ = make(root)
    gopher.run(task(TaskType.DOWNLOAD, basemodel(f"file://{directory}", storage={"decrypt": True})))
    assert sink.statuses() == ["Updating", "Ready"]
    assert_same(root / "team" / "minilm", m.clear)


def test_clear_files_are_never_taken_for_ome_ciphertext() -> None:
    assert omeformat.looks_plain(safetensors_bytes(10)[:512], 10_000)
    assert omeformat.looks_plain(b'{"architectures": ["CohereForCausalLM"]}', 40)
    assert omeformat.looks_plain(b"PK\x03\x04" + os.urandom(60), 64)  # torch zip checkpoints
    assert omeformat.looks_plain(os.urandom(20), 20)  # shorter than nonce + tag
    dek = os.urandom(32)
    assert not omeformat.looks_plain(ome_encrypt(safetensors_bytes(100), dek)[:512], 10_000)


def test_ranged_reads_match_the_plaintext() -> None:
    dek, data = os.urandom(32), os.urandom(10_000)
    sealed = ome_encrypt(data, dek)
    nonce, body = sealed[:12], sealed[12:-16]
    for start, length in ((0, 10_000), (1, 15), (16, 16), (4095, 2000), (9_990, 10)):
        first = start - start % 16
        pieces = [body[first + i : first + i + 7] for i in range(0, start + length - first, 7)]
        assert b"".join(omeformat.decrypt_range(dek, nonce, pieces, start, length)) == data[start : start + length]
