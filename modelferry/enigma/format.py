"""The enigma file format (version 1): a header, then AES-256-GCM chunks.

Layout (all integers big-endian)::

    offset  size  field
    0       8     magic  b"MFENIGMA"
    8       1     format version (1)
    9       1     algorithm (1 = AES-256-GCM)
    10      4     chunk size: plaintext bytes per chunk (4 KiB .. 64 MiB)
    14      16    file salt (random per file)
    30      7     nonce prefix (random per file)
    37      8     plaintext size (2**64-1 when unknown at encryption time)
    45      4     key block length N
    49      N     key block: UTF-8 JSON {"provider", "key_id", "wrapped_key" (base64), "params"}
    49+N    ...   chunks: ciphertext || 16-byte GCM tag; every chunk but the last holds
                  exactly ``chunk size`` plaintext bytes; the last holds 0..chunk size

Keys: the KMS provider wraps a random 256-bit *data key*; the key that seals the
chunks is ``HKDF-SHA256(data key, salt=file salt, info=b"modelferry-enigma/1")``,
so a data key shared by many files (OME-Agent keeps one per model as a Vault
secret) still gives every file its own key.

Chunk ``i`` is sealed with nonce ``prefix(7) || i (4 bytes) || last (1 byte: 1 on
the final chunk, else 0)`` and associated data = the 45 fixed header bytes.
Hence: a flipped bit fails that chunk's tag; dropping the final chunk leaves a
chunk without the last flag (and a size that disagrees with the header); chunks
swapped within a file fail (the index is in the nonce); chunks or headers
swapped between files fail (another salt gives another key); editing any fixed
header field fails every chunk. The key block is deliberately *not* associated
data, so ``rewrap`` can replace it after a KMS key rotation without re-encrypting
the weights; tampering with it yields no data key or a wrong one, and then every
chunk fails authentication.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from modelferry.errors import IntegrityError, UsageError

MAGIC = b"MFENIGMA"
VERSION = 1
ALG_AES_256_GCM = 1
TAG_SIZE = 16
SALT_SIZE = 16
PREFIX_SIZE = 7
UNKNOWN_SIZE = (1 << 64) - 1
DEFAULT_CHUNK_SIZE = 2 << 20
MIN_CHUNK_SIZE = 4 << 10
MAX_CHUNK_SIZE = 64 << 20
MAX_KEY_BLOCK = 64 << 10
MAX_CHUNKS = 1 << 32

_FIXED = struct.Struct(">8sBBI16s7sQ")  # magic .. plaintext size
FIXED_SIZE = _FIXED.size  # 45
PREFIX_LEN = FIXED_SIZE + 4  # fixed part + key block length


@dataclass(frozen=True)
class KeyBlock:
    """How to recover the data key: which KMS, which key, the wrapped key, provider parameters."""

    provider: str
    key_id: str
    wrapped_key: bytes
    params: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        doc = {
            "provider": self.provider,
            "key_id": self.key_id,
            "wrapped_key": base64.b64encode(self.wrapped_key).decode("ascii"),
            "params": self.params,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, obj: str | None = None) -> KeyBlock:
        try:
            doc = json.loads(data.decode("utf-8"))
            return cls(
                provider=str(doc["provider"]),
                key_id=str(doc["key_id"]),
                wrapped_key=base64.b64decode(doc["wrapped_key"], validate=True),
                params=dict(doc.get("params") or {}),
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise IntegrityError(f"corrupt enigma key block: {exc}", obj=obj) from exc


@dataclass(frozen=True)
class Header:
    """A parsed header; ``fixed`` is the associated data of every chunk."""

    chunk_size: int
    salt: bytes
    nonce_prefix: bytes
    plaintext_size: int | None
    key_block: KeyBlock
    version: int = VERSION
    algorithm: int = ALG_AES_256_GCM

    @property
    def fixed(self) -> bytes:
        size = UNKNOWN_SIZE if self.plaintext_size is None else self.plaintext_size
        return _FIXED.pack(MAGIC, self.version, self.algorithm, self.chunk_size, self.salt, self.nonce_prefix, size)

    def to_bytes(self) -> bytes:
        block = self.key_block.to_bytes()
        return self.fixed + struct.pack(">I", len(block)) + block

    @property
    def size(self) -> int:
        return PREFIX_LEN + len(self.key_block.to_bytes())

    def with_key_block(self, block: KeyBlock) -> Header:
        """The same file sealed under another wrapping of the same data key (rewrap)."""
        return Header(self.chunk_size, self.salt, self.nonce_prefix, self.plaintext_size, block)


def check_chunk_size(chunk_size: int) -> int:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise UsageError(
            f"chunk size {chunk_size} is out of range",
            hint=f"Use {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes (default {DEFAULT_CHUNK_SIZE})",
        )
    return chunk_size


def is_encrypted(prefix: bytes) -> bool:
    """True when ``prefix`` (the first bytes of a file) starts with the enigma magic."""
    return prefix[: len(MAGIC)] == MAGIC


def parse_prefix(data: bytes, *, obj: str | None = None) -> tuple[bytes, int]:
    """Check the first :data:`PREFIX_LEN` bytes; returns the fixed part and the key block length."""
    if len(data) < PREFIX_LEN or not is_encrypted(data):
        raise IntegrityError("not an enigma-encrypted file (bad magic or too short)", obj=obj)
    _magic, version, alg, chunk_size, _salt, _prefix, _size = _FIXED.unpack(data[:FIXED_SIZE])
    if version != VERSION:
        raise IntegrityError(
            f"unsupported enigma format version {version}", obj=obj, hint="Upgrade modelferry to read this file"
        )
    if alg != ALG_AES_256_GCM:
        raise IntegrityError(f"unsupported enigma algorithm {alg}", obj=obj)
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise IntegrityError(f"enigma header has an invalid chunk size {chunk_size}", obj=obj)
    (block_len,) = struct.unpack(">I", data[FIXED_SIZE:PREFIX_LEN])
    if block_len > MAX_KEY_BLOCK:
        raise IntegrityError(f"enigma key block is implausibly large ({block_len} bytes)", obj=obj)
    return data[:FIXED_SIZE], block_len


def parse_header(prefix: bytes, block: bytes, *, obj: str | None = None) -> Header:
    """A header from its fixed part (+ length) and its key block bytes."""
    fixed, block_len = parse_prefix(prefix, obj=obj)
    if len(block) != block_len:
        raise IntegrityError("enigma header is truncated", obj=obj)
    _magic, version, alg, chunk_size, salt, nonce_prefix, size = _FIXED.unpack(fixed)
    return Header(
        chunk_size=chunk_size,
        salt=salt,
        nonce_prefix=nonce_prefix,
        plaintext_size=None if size == UNKNOWN_SIZE else size,
        key_block=KeyBlock.from_bytes(block, obj=obj),
        version=version,
        algorithm=alg,
    )


def chunk_count(plaintext_size: int, chunk_size: int) -> int:
    """Chunks for a plaintext; an empty file still has one (empty, final) chunk."""
    return max(1, -(-plaintext_size // chunk_size))


def ciphertext_size(header_size: int, plaintext_size: int, chunk_size: int) -> int:
    return header_size + plaintext_size + TAG_SIZE * chunk_count(plaintext_size, chunk_size)


def plaintext_size_of(body_size: int, chunk_size: int, *, obj: str | None = None) -> int:
    """Plaintext bytes in a body (everything after the header) of ``body_size`` bytes."""
    sealed = chunk_size + TAG_SIZE
    full, rest = divmod(body_size, sealed)
    if rest == 0:
        if full == 0:
            raise IntegrityError("enigma file has no chunks (truncated)", obj=obj)
        return full * chunk_size
    if rest < TAG_SIZE:
        raise IntegrityError("enigma file ends inside a chunk tag (truncated)", obj=obj)
    return full * chunk_size + rest - TAG_SIZE


def nonce(prefix: bytes, index: int, last: bool) -> bytes:
    """The 12-byte GCM nonce of chunk ``index``."""
    if index >= MAX_CHUNKS:
        raise UsageError("file too large for the enigma format (2**32 chunks)", hint="Use a larger --chunk-size")
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")
