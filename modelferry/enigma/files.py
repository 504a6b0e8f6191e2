"""The operations on one file: encrypt, decrypt, rewrap, inspect.

Each reads a :class:`~modelferry.enigma.streams.Source` and writes through a
:class:`~modelferry.enigma.streams.Sink` that is committed only after the last
chunk was sealed or authenticated; any failure aborts the sink, so a failed
decryption leaves no plaintext behind.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from modelferry.enigma import omeformat
from modelferry.enigma.crypto import (
    ChunkCipher,
    chunk_lengths,
    new_header,
    open_pipeline,
    positional_pipeline,
    seal_pipeline,
)
from modelferry.enigma.format import (
    PREFIX_LEN,
    TAG_SIZE,
    Header,
    check_chunk_size,
    chunk_count,
    ciphertext_size,
    is_encrypted,
    parse_header,
    parse_prefix,
    plaintext_size_of,
)
from modelferry.enigma.kms import ProviderCache
from modelferry.enigma.kms.base import KeyProvider
from modelferry.enigma.streams import LocalSink, LocalSource, Sink, Source
from modelferry.errors import IntegrityError, UsageError

log = logging.getLogger(__name__)

SinkFactory = Callable[[int], Sink]


@contextlib.contextmanager
def committed(sink: Sink) -> Iterator[Sink]:
    """The sink, committed when the block succeeds and aborted when it fails (no half file under its name)."""
    try:
        yield sink
        sink.commit()
    except BaseException:
        sink.abort()
        raise


@dataclass(frozen=True)
class FileResult:
    """What one operation did."""

    path: str
    action: str
    bytes_in: int
    bytes_out: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "action": self.action, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out}


def looks_encrypted(source: Source) -> bool:
    """True when the source starts with the enigma magic."""
    if source.size < PREFIX_LEN:
        return False
    return is_encrypted(source.read_exact(0, 8))


def read_header(source: Source) -> Header:
    """Parse the header of an encrypted source (two small ranged reads)."""
    prefix = source.read_exact(0, PREFIX_LEN) if source.size >= PREFIX_LEN else source.read_exact(0, source.size)
    _fixed, block_len = parse_prefix(prefix, obj=source.describe)
    if PREFIX_LEN + block_len > source.size:
        raise IntegrityError("enigma header is truncated", obj=source.describe)
    block = source.read_exact(PREFIX_LEN, block_len)
    return parse_header(prefix, block, obj=source.describe)


def body_layout(header: Header, total_size: int, *, obj: str) -> tuple[int, int]:
    """(plaintext size, chunk count) of a file of ``total_size`` bytes, checked against the header."""
    body = total_size - header.size
    plain = plaintext_size_of(body, header.chunk_size, obj=obj)
    if header.plaintext_size is not None and plain != header.plaintext_size:
        raise IntegrityError(
            f"encrypted file is truncated or extended: the header says {header.plaintext_size} plaintext bytes, "
            f"the body holds {plain}",
            obj=obj,
            hint="Fetch a complete copy of the encrypted file",
        )
    return plain, chunk_count(plain, header.chunk_size)


def encrypt(source: Source, make_sink: SinkFactory, provider: KeyProvider, chunk_size: int, workers: int) -> FileResult:
    """Encrypt ``source`` under a fresh data key wrapped by ``provider``."""
    check_chunk_size(chunk_size)
    if looks_encrypted(source):
        raise UsageError(f"{source.describe} is already encrypted", obj=source.describe, hint="Use rewrap instead")
    data_key, block = provider.new_data_key()
    header = new_header(block, chunk_size, source.size)
    cipher = ChunkCipher(header, data_key, obj=source.describe)
    total = ciphertext_size(header.size, source.size, chunk_size)
    with committed(make_sink(total)) as sink:
        head = header.to_bytes()
        sink.write(head)
        if isinstance(source, LocalSource) and isinstance(sink, LocalSink):
            lengths = chunk_lengths(source.size, chunk_size)
            step = chunk_size + TAG_SIZE
            positional_pipeline(
                source.read_at, sink.write_at, lengths, chunk_size, 0, step, len(head),
                lambda n: n + TAG_SIZE, cipher.seal_into, workers, source.describe,
            )  # fmt: skip
        else:
            with source.open_fill(0, source.size) as fill:
                for sealed in seal_pipeline(cipher, fill, source.size, workers):
                    sink.write(sealed)
    log.info("encrypted %s (%d bytes) with %s key %s", source.describe, source.size, block.provider, block.key_id)
    return FileResult(source.describe, "encrypted", source.size, total)


def encryption_of(source: Source, providers: ProviderCache) -> str | None:
    """``"modelferry"`` (our chunked format), ``"ome"`` (OME's one GCM message) or None (clear).

    OME's files have no header: a file without our magic counts as OME ciphertext only when an OCI
    vault data key is configured and its first bytes are no clear format (safetensors, text, zip...).
    """
    if looks_encrypted(source):
        return "modelferry"
    if not providers.ome_configured() or source.size < omeformat.OVERHEAD:
        return None
    head = source.read_exact(0, min(source.size, 512))
    return None if omeformat.looks_plain(head, source.size) else "ome"


def decrypt_ome(source: Source, make_sink: SinkFactory, key: bytes) -> FileResult:
    """Decrypt an OME-encrypted file in one streaming pass: the tag is read first (a ranged read at the
    end), the sink is committed only after the tag verified."""
    plain = omeformat.plaintext_size(source.size, obj=source.describe)
    nonce = source.read_exact(0, omeformat.NONCE_SIZE)
    tag = source.read_exact(source.size - omeformat.TAG_SIZE, omeformat.TAG_SIZE)
    stream = omeformat.GCMStream(key, nonce, tag, obj=source.describe)
    with committed(make_sink(plain)) as sink:
        for piece in source.read(omeformat.NONCE_SIZE, plain):
            sink.write(stream.update(piece))
        stream.finish()
    log.info("decrypted OME-encrypted %s (%d bytes)", source.describe, plain)
    return FileResult(source.describe, "decrypted", source.size, plain)


def decrypt(source: Source, make_sink: SinkFactory, providers: ProviderCache, workers: int) -> FileResult:
    """Decrypt ``source`` (either format); the sink is committed only after every byte authenticated."""
    if encryption_of(source, providers) == "ome":
        key = providers.ome_data_key()
        if key is None:
            raise UsageError("OME-encrypted files need the OCI vault data key", obj=source.describe)
        return decrypt_ome(source, make_sink, key)
    header = read_header(source)
    plain, _count = body_layout(header, source.size, obj=source.describe)
    data_key = providers.get(header.key_block.provider).unwrap(header.key_block)
    cipher = ChunkCipher(header, data_key, obj=source.describe)
    body = source.size - header.size
    with committed(make_sink(plain)) as sink:
        if isinstance(source, LocalSource) and isinstance(sink, LocalSink):
            step = header.chunk_size + TAG_SIZE
            positional_pipeline(
                source.read_at, sink.write_at, chunk_lengths(body, step), step, header.size,
                header.chunk_size, 0, lambda n: n - TAG_SIZE, cipher.open_into, workers, source.describe,
            )  # fmt: skip
        else:
            with source.open_fill(header.size, body) as fill:
                for chunk in open_pipeline(cipher, fill, body, workers):
                    sink.write(chunk)
    log.info("decrypted %s (%d bytes)", source.describe, plain)
    return FileResult(source.describe, "decrypted", source.size, plain)


def rewrap(source: Source, make_sink: SinkFactory, providers: ProviderCache, target: KeyProvider | None) -> FileResult:
    """Wrap the file's data key under the newest key (or ``target``); the chunks are copied as they are."""
    header = read_header(source)
    body_layout(header, source.size, obj=source.describe)
    old = header.key_block
    if target is None or target.name == old.provider:
        block = providers.get(old.provider).rewrap(old)
    else:
        block = target.wrap(providers.get(old.provider).unwrap(old))
    new = header.with_key_block(block)
    body = source.size - header.size
    with committed(make_sink(new.size + body)) as sink:
        sink.write(new.to_bytes())
        for piece in source.read(header.size, body):
            sink.write(piece)
    log.info(
        "rewrapped %s: %s key %s -> %s key %s", source.describe, old.provider, old.key_id, block.provider, block.key_id
    )
    return FileResult(source.describe, "rewrapped", source.size, new.size + body)


def inspect(source: Source) -> dict[str, Any]:
    """The header of an encrypted file as plain data (no key needed)."""
    header = read_header(source)
    plain, count = body_layout(header, source.size, obj=source.describe)
    block = header.key_block
    return {
        "path": source.describe,
        "format_version": header.version,
        "algorithm": "AES-256-GCM",
        "chunk_size": header.chunk_size,
        "chunks": count,
        "plaintext_size": plain,
        "encrypted_size": source.size,
        "header_size": header.size,
        "provider": block.provider,
        "key_id": block.key_id,
        "params": block.params,
    }
