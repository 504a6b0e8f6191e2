"""``modelferry enigma`` CLI and ``modelferry sync --decrypt``, local and through S3 (moto)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelferry.cli.main import main
from modelferry.enigma.decrypting import DecryptingStore
from modelferry.enigma.format import MIN_CHUNK_SIZE, TAG_SIZE
from modelferry.enigma.kms import ProviderCache
from modelferry.enigma.settings import EnigmaSettings, LocalKeySettings
from modelferry.errors import IntegrityError
from modelferry.settings import MiB, TransferSettings
from modelferry.storage.local import LocalStore
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, MotoS3, shared_servers

CHUNK = MIN_CHUNK_SIZE


def run(args: list[str], capsys: pytest.CaptureFixture[str] | None = None) -> tuple[int, Any]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out: Any = None
    if capsys is not None:
        text = capsys.readouterr().out
        out = json.loads(text) if text.strip().startswith(("{", "[")) else text
    return int(exc.value.code or 0), out


@pytest.fixture
def model(tmp_path: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"model_type": "llama"}',
        "weights/model-00001.safetensors": os.urandom(3 * MiB + 12345),
        "weights/model-00002.safetensors": os.urandom(CHUNK * 3),
        "empty.txt": b"",
    }
    for rel, data in files.items():
        (tmp_path / "model" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "model" / rel).write_bytes(data)
    (tmp_path / "model" / "weights/model-00001.safetensors").chmod(0o640)
    return files


@pytest.fixture
def key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "enigma.key"
    path.write_bytes(os.urandom(32))
    monkeypatch.setenv("MODELFERRY_ENIGMA__LOCAL__KEY_FILE", str(path))
    monkeypatch.setenv("MODELFERRY_ENIGMA__CHUNK_SIZE", str(CHUNK))
    return path


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".modelferry" not in p.parts
    }


def test_cli_encrypt_inspect_decrypt(
    tmp_path: Path, model: dict[str, bytes], key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(["enigma", "encrypt", str(tmp_path / "model"), "-o", str(tmp_path / "enc"), "--json"], capsys)
    assert code == 0 and len(out["files"]) == 4
    enc = tree(tmp_path / "enc")
    assert set(enc) == set(model)
    assert all(enc[name] != data for name, data in model.items())
    assert stat.S_IMODE((tmp_path / "enc/weights/model-00001.safetensors").stat().st_mode) == 0o640
    code, out = run(["enigma", "inspect", str(tmp_path / "enc"), "--json"], capsys)
    assert code == 0 and {d["plaintext_size"] for d in out} == {len(v) for v in model.values()}
    code, _ = run(["enigma", "decrypt", str(tmp_path / "enc"), "-o", str(tmp_path / "dec")])
    assert code == 0 and tree(tmp_path / "dec") == model


def test_cli_in_place_and_usage_errors(tmp_path: Path, model: dict[str, bytes], key: Path) -> None:
    target = tmp_path / "model/weights/model-00002.safetensors"
    assert run(["enigma", "encrypt", str(target), "--in-place"])[0] == 0
    assert target.read_bytes() != model["weights/model-00002.safetensors"]
    assert run(["enigma", "encrypt", str(target), "--in-place"])[0] == 0  # already encrypted: skipped
    assert run(["enigma", "decrypt", str(target), "--in-place"])[0] == 0
    assert target.read_bytes() == model["weights/model-00002.safetensors"]
    assert run(["enigma", "decrypt", str(target)])[0] == 2  # neither --output nor --in-place
    assert run(["enigma", "decrypt", str(target), "--in-place"])[0] == 3  # not encrypted


def test_cli_tampered_file_exit_3_and_nothing_written(tmp_path: Path, model: dict[str, bytes], key: Path) -> None:
    assert run(["enigma", "encrypt", str(tmp_path / "model"), "-o", str(tmp_path / "enc")])[0] == 0
    victim = tmp_path / "enc/weights/model-00001.safetensors"
    blob = bytearray(victim.read_bytes())
    blob[-5] ^= 0xFF
    victim.write_bytes(bytes(blob))
    assert run(["enigma", "decrypt", str(victim), "-o", str(tmp_path / "out.bin")])[0] == 3
    assert not (tmp_path / "out.bin").exists()
    assert not [p for p in tmp_path.iterdir() if ".enigma-" in p.name]


def test_cli_ome_agent_config(tmp_path: Path, model: dict[str, bytes], key: Path) -> None:
    # The OME-Agent flow decrypts local_path in place with the oci provider; with decryption
    # disabled it must leave everything alone and succeed.
    config = tmp_path / "ome.yaml"
    config.write_text(f'local_path: "{tmp_path / "model"}"\nkey_name: command_r\ndisable_model_decryption: true\n')
    assert run(["enigma", "--config", str(config)])[0] == 0
    assert tree(tmp_path / "model") == model
    bad = tmp_path / "bad.yaml"
    bad.write_text("local_path: [unclosed\n")
    assert run(["enigma", "--config", str(bad)])[0] == 2


def decrypting_source(root: Path, key: Path) -> DecryptingStore:
    settings = EnigmaSettings(local=LocalKeySettings(key_file=str(key)))
    return DecryptingStore(LocalStore(parse_uri(str(root)), root), ProviderCache(settings))


def test_sync_decrypt_local(tmp_path: Path, model: dict[str, bytes], key: Path) -> None:
    assert run(["enigma", "encrypt", str(tmp_path / "model"), "-o", str(tmp_path / "enc")])[0] == 0
    (tmp_path / "enc/README.md").write_bytes(b"left in clear")  # plaintext files pass through
    term = tmp_path / "term.json"
    args = ["sync", str(tmp_path / "enc"), str(tmp_path / "out"), "--decrypt", "--part-size", "1MiB"]
    assert run([*args, "--termination-log", str(term)])[0] == 0
    assert tree(tmp_path / "out") == {**model, "README.md": b"left in clear"}
    manifest = json.loads((tmp_path / "out/.modelferry/manifest.json").read_text())
    import hashlib

    by_path = {f["path"]: f for f in manifest["files"]}
    assert by_path["config.json"]["sha256"] == hashlib.sha256(model["config.json"]).hexdigest()
    # A second run skips everything (manifest + plaintext-view etags).
    assert run([*args, "--termination-log", str(term)])[0] == 0
    assert json.loads(term.read_text())["files_copied"] == 0


def test_sync_decrypt_ranged_reads_cover_every_boundary(tmp_path: Path, key: Path) -> None:
    data = os.urandom(5 * CHUNK + 77)
    (tmp_path / "src").mkdir()
    (tmp_path / "src/w.bin").write_bytes(data)
    assert run(["enigma", "encrypt", str(tmp_path / "src"), "-o", str(tmp_path / "enc")])[0] == 0
    store = decrypting_source(tmp_path / "enc", key)
    [info] = list(store.list())
    assert info.size == len(data)
    for start, length in [(0, 1), (CHUNK - 1, 2), (CHUNK, CHUNK), (3, 4 * CHUNK), (5 * CHUNK, 77), (0, len(data))]:
        assert b"".join(store.read("w.bin", start, length)) == data[start : start + length]


def test_sync_decrypt_tampered_source_leaves_nothing(tmp_path: Path, model: dict[str, bytes], key: Path) -> None:
    assert run(["enigma", "encrypt", str(tmp_path / "model"), "-o", str(tmp_path / "enc")])[0] == 0
    victim = tmp_path / "enc/weights/model-00002.safetensors"
    blob = bytearray(victim.read_bytes())
    blob[len(blob) - (CHUNK + TAG_SIZE) - 3] ^= 1  # inside the second-to-last chunk
    victim.write_bytes(bytes(blob))
    source = decrypting_source(tmp_path / "enc", key)
    target = LocalStore(parse_uri(str(tmp_path / "out")), tmp_path / "out")
    with pytest.raises(IntegrityError, match="failed authentication"):
        sync(source, target, TransferSettings(part_size=MiB, concurrency=4, retries=1, backoff_base=0.01))
    assert not (tmp_path / "out/weights/model-00002.safetensors").exists()
    assert not (tmp_path / "out/.modelferry/manifest.json").exists()
    partial = tmp_path / "out/.modelferry/partial"
    assert not partial.exists() or not [p for p in partial.iterdir() if p.suffix == ".part"]


def test_sync_decrypt_truncated_source_rejected(tmp_path: Path, key: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/w.bin").write_bytes(os.urandom(4 * CHUNK))
    assert run(["enigma", "encrypt", str(tmp_path / "src"), "-o", str(tmp_path / "enc")])[0] == 0
    victim = tmp_path / "enc/w.bin"
    victim.write_bytes(victim.read_bytes()[: -(CHUNK + TAG_SIZE)])
    with pytest.raises(IntegrityError, match="truncated"):
        list(decrypting_source(tmp_path / "enc", key).list())
    code, _ = run(["sync", str(tmp_path / "enc"), str(tmp_path / "out"), "--decrypt"])
    assert code == 3
    assert not (tmp_path / "out/w.bin").exists()


@pytest.fixture
def moto() -> Iterator[MotoS3]:
    first, _second = shared_servers()
    first.reset()
    yield first
    first.reset()


def test_encrypt_to_s3_then_sync_decrypt_from_s3(
    tmp_path: Path, model: dict[str, bytes], key: Path, moto: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    client = moto.create_bucket("models")
    assert run(["enigma", "encrypt", str(tmp_path / "model"), "-o", "s3://models/llama-enc/"])[0] == 0
    body = client.get_object(Bucket="models", Key="llama-enc/config.json")["Body"].read()
    assert body.startswith(b"MFENIGMA")
    assert run(["enigma", "inspect", "s3://models/llama-enc/config.json"])[0] == 0
    term = tmp_path / "term.json"
    code, _ = run(["sync", "s3://models/llama-enc", str(tmp_path / "out"), "--decrypt", "--termination-log", str(term)])
    assert code == 0, term.read_text()
    assert tree(tmp_path / "out") == model
    # And back from the bucket with the enigma CLI itself.
    assert run(["enigma", "decrypt", "s3://models/llama-enc/", "-o", str(tmp_path / "dec")])[0] == 0
    assert tree(tmp_path / "dec") == model
