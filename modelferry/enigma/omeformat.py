"""OME's enigma file format: one AES-256-GCM message per file, ``nonce(12) || ciphertext || tag(16)``.

OME-Agent encrypts each weight file whole under the model's data key (the Vault secret
``<key_name>-dek``, wrapped by OCI KMS), with no header and no associated data. A GCM message can
only be authenticated whole, so readers here take the tag first (a small read at the end of the
file) and stream the ciphertext through one decryptor: constant memory, and the plaintext counts
only once :meth:`GCMStream.finish` has checked the tag. Ranged reads (``sync --decrypt``) use the
same keystream (GCM is CTR underneath) after a full authentication pass.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from modelferry.errors import IntegrityError

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
BLOCK = 16
# Formats a model directory holds in clear (checked before a file is taken for OME ciphertext).
PLAIN_MAGICS = (b"PK\x03\x04", b"GGUF", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x93NUMPY", b"\x89HDF")


def looks_plain(head: bytes, size: int) -> bool:
    """True when ``head`` (the file's first bytes) is a known clear format or text, so not OME ciphertext."""
    if size < OVERHEAD:
        return True  # too short to hold a nonce and a tag
    if head.startswith(PLAIN_MAGICS):
        return True
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= size - 8 and head[8:9] == b"{":
            return True  # a safetensors header
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def plaintext_size(size: int, *, obj: str) -> int:
    if size < OVERHEAD:
        raise IntegrityError(f"{obj} is too short to be an OME-encrypted file ({size} bytes)", obj=obj)
    return size - OVERHEAD


class GCMStream:
    """One file's decryptor; :meth:`finish` raises :class:`IntegrityError` unless the tag matches."""

    def __init__(self, key: bytes, nonce: bytes, tag: bytes, *, obj: str) -> None:
        self.obj = obj
        self._dec = Cipher(algorithms.AES(key), modes.GCM(nonce, tag)).decryptor()

    def update(self, data: bytes | memoryview) -> bytes:
        return self._dec.update(data)

    def finish(self) -> None:
        try:
            self._dec.finalize()
        except InvalidTag:
            raise IntegrityError(
                f"{self.obj}: the OME-encrypted file failed authentication (wrong data key, or it is corrupt "
                "or truncated)",
                obj=self.obj,
                hint="Check key_name/secret_name and fetch a complete copy of the file",
            ) from None


def authenticate(key: bytes, nonce: bytes, tag: bytes, ciphertext: Iterable[bytes], *, obj: str) -> None:
    """A full pass over the ciphertext that only checks the tag (nothing is kept)."""
    stream = GCMStream(key, nonce, tag, obj=obj)
    for piece in ciphertext:
        stream.update(piece)
    stream.finish()


def keystream_decryptor(key: bytes, nonce: bytes, block_index: int) -> object:
    """The CTR decryptor GCM uses for plaintext block ``block_index`` (counter starts at 2 for a 96-bit nonce)."""
    counter = nonce + struct.pack(">I", (2 + block_index) & 0xFFFFFFFF)
    return Cipher(algorithms.AES(key), modes.CTR(counter)).decryptor()


def decrypt_range(key: bytes, nonce: bytes, pieces: Iterable[bytes], start: int, length: int) -> Iterator[bytes]:
    """Plaintext ``[start, start+length)`` from ``pieces``, the ciphertext from ``start`` rounded down to a block."""
    first = start // BLOCK
    dec = keystream_decryptor(key, nonce, first)
    skip, left = start - first * BLOCK, length
    for piece in pieces:
        plain = dec.update(piece)  # type: ignore[attr-defined]
        if skip:
            plain, skip = plain[skip:], max(0, skip - len(plain))
        if len(plain) > left:
            plain = plain[:left]
        left -= len(plain)
        if plain:
            yield plain
        if left == 0:
            return
