"""Local key provider: a 32-byte key in a file, e.g. a Kubernetes Secret mounted as a volume.

The data key is wrapped with AES-256-GCM under the key file's key. The key id is
a fingerprint of the key, so the wrong key is named rather than guessed at.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from modelferry.enigma.format import KeyBlock
from modelferry.enigma.kms.base import KeyProvider
from modelferry.errors import AccessDeniedError, IntegrityError, NotFoundError, UsageError
from modelferry.logs import register_secret

WRAP_AAD = b"modelferry-enigma-local/1"


def load_key(path: str) -> bytes:
    """32 raw bytes, or their base64 or hex text (trailing newline allowed)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise NotFoundError(
            f"key file {path} does not exist", obj=path, hint="Create one: head -c32 /dev/urandom"
        ) from None
    except OSError as exc:
        raise AccessDeniedError(f"cannot read key file {path}: {exc.strerror}", obj=path) from exc
    if len(raw) == 32:
        return raw
    text = raw.strip()
    for decoded in (_from_hex(text), _from_base64(text)):
        if decoded is not None and len(decoded) == 32:
            register_secret(text.decode("ascii"))
            return decoded
    raise UsageError(
        f"key file {path} does not hold a 256-bit key",
        obj=path,
        hint="It must contain 32 raw bytes, 64 hex digits or base64 of 32 bytes",
    )


def _from_hex(text: bytes) -> bytes | None:
    try:
        return bytes.fromhex(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None


def _from_base64(text: bytes) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None


def fingerprint(key: bytes) -> str:
    return "sha256:" + hashlib.sha256(b"modelferry-enigma-key-id" + key).hexdigest()[:32]


class LocalKeyProvider(KeyProvider):
    """Wraps data keys under a local key; older keys may be given for decrypt and rewrap."""

    name = "local"

    def __init__(self, key_file: str | None, previous: list[str] | None = None) -> None:
        self.current: bytes | None = load_key(key_file) if key_file else None
        self.keys: dict[str, bytes] = {}
        for path in [*(previous or []), *([key_file] if key_file else [])]:
            key = load_key(path)
            self.keys[fingerprint(key)] = key
        if not self.keys:
            raise UsageError(
                "the local provider needs a key file",
                hint="Pass --key-file or set MODELFERRY_ENIGMA__LOCAL__KEY_FILE",
            )

    def wrap(self, data_key: bytes) -> KeyBlock:
        if self.current is None:
            raise UsageError("encrypting needs the current key (--key-file)")
        iv = os.urandom(12)
        wrapped = iv + AESGCM(self.current).encrypt(iv, data_key, WRAP_AAD)
        return KeyBlock(self.name, fingerprint(self.current), wrapped)

    def unwrap(self, block: KeyBlock) -> bytes:
        self.check_block(block)
        key = self.keys.get(block.key_id)
        if key is None:
            raise AccessDeniedError(
                f"the file was encrypted with local key {block.key_id}, which is not among the keys given",
                hint="Pass the right --key-file (or the old one with --previous-key-file after a rotation)",
            )
        try:
            return AESGCM(key).decrypt(block.wrapped_key[:12], block.wrapped_key[12:], WRAP_AAD)
        except (InvalidTag, ValueError):
            raise IntegrityError("the wrapped data key failed authentication (corrupt key block)") from None
