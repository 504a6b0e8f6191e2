"""Enigma format and crypto with the local key provider: round trips and every tamper case."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelferry.enigma import files
from modelferry.enigma.format import (
    FIXED_SIZE,
    MIN_CHUNK_SIZE,
    PREFIX_LEN,
    TAG_SIZE,
    KeyBlock,
    chunk_count,
    ciphertext_size,
    plaintext_size_of,
)
from modelferry.enigma.kms import ProviderCache
from modelferry.enigma.kms.local import LocalKeyProvider
from modelferry.enigma.settings import EnigmaSettings, LocalKeySettings
from modelferry.enigma.streams import LocalSink, LocalSource, Sink, Source
from modelferry.errors import AccessDeniedError, IntegrityError, UsageError

CHUNK = MIN_CHUNK_SIZE


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    path.write_bytes(os.urandom(32))
    return path


def providers(*keys: Path, previous: list[Path] | None = None) -> ProviderCache:
    local = LocalKeySettings(key_file=str(keys[0]), previous_key_files=[str(p) for p in previous or []])
    return ProviderCache(EnigmaSettings(provider="local", local=local))


def encrypt_file(src: Path, target_path: Path, key: Path, workers: int = 2) -> None:
    provider = LocalKeyProvider(str(key))
    source = LocalSource(src)
    files.encrypt(source, lambda _n: LocalSink(target_path, source.mode or 0o644), provider, CHUNK, workers)


def decrypt_file(src: Path, target_path: Path, cache: ProviderCache, workers: int = 2) -> None:
    source = LocalSource(src)
    files.decrypt(source, lambda _n: LocalSink(target_path, 0o644), cache, workers)


def no_leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".enigma-" in p.name]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK, 7 * CHUNK + 123])
@pytest.mark.parametrize("workers", [1, 3])
def test_round_trip_sizes(tmp_path: Path, key_file: Path, size: int, workers: int) -> None:
    data = os.urandom(size)
    (tmp_path / "w.bin").write_bytes(data)
    encrypt_file(tmp_path / "w.bin", tmp_path / "w.enc", key_file, workers)
    enc = (tmp_path / "w.enc").read_bytes()
    header = files.read_header(LocalSource(tmp_path / "w.enc"))
    assert len(enc) == ciphertext_size(header.size, size, CHUNK)
    assert size < 64 or data[:64] not in enc
    decrypt_file(tmp_path / "w.enc", tmp_path / "w.out", providers(key_file), workers)
    assert (tmp_path / "w.out").read_bytes() == data


def test_layout_helpers() -> None:
    assert chunk_count(0, CHUNK) == 1
    assert chunk_count(CHUNK, CHUNK) == 1
    assert chunk_count(CHUNK + 1, CHUNK) == 2
    for size in (0, 5, CHUNK, 3 * CHUNK + 7):
        body = size + TAG_SIZE * chunk_count(size, CHUNK)
        assert plaintext_size_of(body, CHUNK) == size
    with pytest.raises(IntegrityError):
        plaintext_size_of(CHUNK + TAG_SIZE + 3, CHUNK)


@pytest.fixture
def encrypted(tmp_path: Path, key_file: Path) -> tuple[Path, bytes]:
    data = os.urandom(4 * CHUNK + 100)
    (tmp_path / "w.bin").write_bytes(data)
    encrypt_file(tmp_path / "w.bin", tmp_path / "w.enc", key_file)
    return tmp_path / "w.enc", data


def header_size(path: Path) -> int:
    return files.read_header(LocalSource(path)).size


def expect_rejected(path: Path, cache: ProviderCache, exc: type[Exception], match: str) -> None:
    out = path.parent / "plain.out"
    with pytest.raises(exc, match=match):
        decrypt_file(path, out, cache)
    assert not out.exists()
    assert no_leftovers(path.parent) == []


def test_flipped_bit_rejected(encrypted: tuple[Path, bytes], key_file: Path) -> None:
    path, _ = encrypted
    blob = bytearray(path.read_bytes())
    blob[header_size(path) + 2 * (CHUNK + TAG_SIZE) + 17] ^= 0x04
    path.write_bytes(bytes(blob))
    expect_rejected(path, providers(key_file), IntegrityError, "chunk 2 failed authentication")


def test_last_chunk_dropped_rejected(encrypted: tuple[Path, bytes], key_file: Path) -> None:
    path, _ = encrypted
    blob = path.read_bytes()
    path.write_bytes(blob[: header_size(path) + 4 * (CHUNK + TAG_SIZE)])
    expect_rejected(path, providers(key_file), IntegrityError, "truncated")


def test_last_chunk_dropped_without_size_in_header_rejected(encrypted: tuple[Path, bytes], key_file: Path) -> None:
    # Even with the size check bypassed (unknown size), the new final chunk lacks the last flag.
    path, _ = encrypted
    blob = bytearray(path.read_bytes())
    blob[FIXED_SIZE - 8 : FIXED_SIZE] = b"\xff" * 8
    path.write_bytes(bytes(blob[: header_size(path) + 4 * (CHUNK + TAG_SIZE)]))
    expect_rejected(path, providers(key_file), IntegrityError, "failed authentication")


def test_chunks_swapped_rejected(encrypted: tuple[Path, bytes], key_file: Path) -> None:
    path, _ = encrypted
    blob = path.read_bytes()
    h, s = header_size(path), CHUNK + TAG_SIZE
    c0, c1 = blob[h : h + s], blob[h + s : h + 2 * s]
    path.write_bytes(blob[:h] + c1 + c0 + blob[h + 2 * s :])
    expect_rejected(path, providers(key_file), IntegrityError, "chunk 0 failed authentication")


def test_headers_swapped_between_files_rejected(tmp_path: Path, key_file: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.bin").write_bytes(os.urandom(2 * CHUNK))
        encrypt_file(tmp_path / f"{name}.bin", tmp_path / f"{name}.enc", key_file)
    a, b = (tmp_path / "a.enc").read_bytes(), (tmp_path / "b.enc").read_bytes()
    ha, hb = header_size(tmp_path / "a.enc"), header_size(tmp_path / "b.enc")
    (tmp_path / "mixed.enc").write_bytes(a[:ha] + b[hb:])
    expect_rejected(tmp_path / "mixed.enc", providers(key_file), IntegrityError, "failed authentication")
    # A chunk moved from another file, same position: rejected too.
    (tmp_path / "mixed2.enc").write_bytes(a[: ha + CHUNK + TAG_SIZE] + b[hb + CHUNK + TAG_SIZE :])
    expect_rejected(tmp_path / "mixed2.enc", providers(key_file), IntegrityError, "chunk 1 failed")


def test_fixed_header_tampering_rejected(encrypted: tuple[Path, bytes], key_file: Path) -> None:
    path, _ = encrypted
    blob = bytearray(path.read_bytes())
    blob[20] ^= 0x01  # inside the salt
    path.write_bytes(bytes(blob))
    expect_rejected(path, providers(key_file), IntegrityError, "failed authentication")


def test_key_block_tampering_rejected(encrypted: tuple[Path, bytes], key_file: Path) -> None:
    path, _ = encrypted
    header = files.read_header(LocalSource(path))
    block = header.key_block
    wrapped = bytearray(block.wrapped_key)
    wrapped[-1] ^= 1
    bad = header.with_key_block(KeyBlock(block.provider, block.key_id, bytes(wrapped)))
    path.write_bytes(bad.to_bytes() + path.read_bytes()[header.size :])
    expect_rejected(path, providers(key_file), IntegrityError, "wrapped data key")


def test_wrong_key_rejected(encrypted: tuple[Path, bytes], tmp_path: Path) -> None:
    path, _ = encrypted
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    expect_rejected(path, providers(other), AccessDeniedError, "not among the keys given")


def test_not_encrypted_rejected(tmp_path: Path, key_file: Path) -> None:
    (tmp_path / "plain.bin").write_bytes(b"x" * 100)
    expect_rejected(tmp_path / "plain.bin", providers(key_file), IntegrityError, "not an enigma-encrypted file")


def test_double_encrypt_refused(encrypted: tuple[Path, bytes], key_file: Path) -> None:
    path, _ = encrypted
    with pytest.raises(UsageError, match="already encrypted"):
        encrypt_file(path, path.with_suffix(".twice"), key_file)


def test_rewrap_after_rotation(encrypted: tuple[Path, bytes], key_file: Path, tmp_path: Path) -> None:
    path, data = encrypted
    new_key = tmp_path / "new.key"
    new_key.write_bytes(os.urandom(32))
    cache = providers(new_key, previous=[key_file])
    target = cache.get("local")
    src = LocalSource(path)
    files.rewrap(src, lambda _n: LocalSink(path, 0o640), cache, target)
    # The body is unchanged; the old key alone no longer opens it; the new one does.
    expect_rejected(path, providers(key_file), AccessDeniedError, "not among")
    decrypt_file(path, tmp_path / "after.bin", providers(new_key))
    assert (tmp_path / "after.bin").read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_modes_never_world_writable(tmp_path: Path, key_file: Path) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(b"abc")
    src.chmod(0o666)
    encrypt_file(src, tmp_path / "w.enc", key_file)
    assert stat.S_IMODE((tmp_path / "w.enc").stat().st_mode) == 0o664


def test_inspect(encrypted: tuple[Path, bytes]) -> None:
    path, data = encrypted
    info = files.inspect(LocalSource(path))
    assert info["plaintext_size"] == len(data)
    assert info["chunks"] == 5
    assert info["provider"] == "local"
    assert info["header_size"] > PREFIX_LEN


def test_key_file_formats(tmp_path: Path) -> None:
    key = os.urandom(32)
    (tmp_path / "hex").write_text(key.hex() + "\n")
    import base64

    (tmp_path / "b64").write_text(base64.b64encode(key).decode())
    a = LocalKeyProvider(str(tmp_path / "hex"))
    b = LocalKeyProvider(str(tmp_path / "b64"))
    assert a.current == b.current == key
    (tmp_path / "short").write_bytes(b"short")
    with pytest.raises(UsageError, match="256-bit"):
        LocalKeyProvider(str(tmp_path / "short"))


class MemorySource(Source):
    """Not a local file: exercises the streaming (non-positional) pipeline."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self.describe = "memory"

    def read(self, offset: int, length: int, piece: int = 1 << 20) -> Iterator[bytes]:
        end = offset + length
        while offset < end:
            step = min(7777, end - offset)  # odd piece sizes cross chunk boundaries
            yield self.data[offset : offset + step]
            offset += step


class MemorySink(Sink):
    def __init__(self) -> None:
        self.describe = "memory"
        self.buf = bytearray()
        self.committed: bytes | None = None

    def write(self, data: bytes | memoryview) -> None:
        self.buf += data

    def commit(self) -> None:
        self.committed = bytes(self.buf)

    def abort(self) -> None:
        self.buf.clear()


@pytest.mark.parametrize("workers", [1, 3])
def test_streaming_pipeline_round_trip_and_tamper(key_file: Path, workers: int) -> None:
    data = os.urandom(6 * CHUNK + 5)
    enc = MemorySink()
    files.encrypt(MemorySource(data), lambda _n: enc, LocalKeyProvider(str(key_file)), CHUNK, workers)
    assert enc.committed is not None
    out = MemorySink()
    files.decrypt(MemorySource(enc.committed), lambda _n: out, providers(key_file), workers)
    assert out.committed == data
    bad = bytearray(enc.committed)
    bad[-(CHUNK + TAG_SIZE) - 1] ^= 1
    spoiled = MemorySink()
    with pytest.raises(IntegrityError, match="chunk 5 failed authentication"):
        files.decrypt(MemorySource(bytes(bad)), lambda _n: spoiled, providers(key_file), workers)
    assert spoiled.committed is None and not spoiled.buf
