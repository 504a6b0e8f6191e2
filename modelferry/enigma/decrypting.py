"""``sync --decrypt``: a read-only :class:`Store` that shows the plaintext of an encrypted source.

It wraps the real source store. Listing reads each file's header (two small
ranged reads) and reports the plaintext size; a ranged read fetches the sealed
chunks that cover the range, authenticates each, and yields only the requested
plaintext bytes. Chunks open independently, so the engine's parallel ranged
reads work unchanged, and the engine hashes the plaintext it writes. A chunk that
fails authentication raises :class:`~modelferry.errors.IntegrityError` (permanent):
the engine aborts the upload, so unverified plaintext never reaches a final name.
The final chunk is only accepted with its last-chunk flag, so a truncated
source fails too. Files without the enigma magic (``config.json`` left in clear,
our own manifests) pass through unchanged with their own checksums, unless an OCI vault data key
is configured and they look like OME's format (one AES-GCM message per file, no header): those
are authenticated whole in a first pass (the tag is read first), then served by ranges.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from modelferry.checksums import clean_etag
from modelferry.enigma import omeformat
from modelferry.enigma.crypto import ChunkCipher, open_stream
from modelferry.enigma.files import body_layout, read_header
from modelferry.enigma.format import PREFIX_LEN, TAG_SIZE, Header
from modelferry.enigma.kms import ProviderCache
from modelferry.enigma.settings import load_enigma_settings
from modelferry.enigma.streams import StoreSource
from modelferry.errors import UsageError
from modelferry.storage.base import MANIFEST_DIR, ObjectInfo, Store, StoreFeatures

log = logging.getLogger(__name__)


@dataclass
class _Sealed:
    inner: ObjectInfo
    header: Header
    plaintext_size: int
    chunks: int
    cipher: ChunkCipher | None = None


@dataclass
class _OmeSealed:
    """An OME-encrypted object: authenticated whole once (a full pass), then read by ranges."""

    inner: ObjectInfo
    nonce: bytes
    tag: bytes
    lock: threading.Lock = field(default_factory=threading.Lock)
    verified: bool = False


class DecryptingStore(Store):
    """Plaintext view of ``inner``; data keys are unwrapped once per file through ``providers``."""

    def __init__(self, inner: Store, providers: ProviderCache, *, list_workers: int = 8) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.features = StoreFeatures()  # read-only view: no random writes, no server-side copy
        self.providers = providers
        self.list_workers = list_workers
        self._sealed: dict[str, _Sealed] = {}
        self._plain: dict[str, ObjectInfo] = {}
        self._ome: dict[str, _OmeSealed] = {}
        self._lock = threading.Lock()

    @property
    def revision(self) -> str | None:
        return self.inner.revision

    def identity(self) -> str:
        return f"enigma:{self.inner.identity()}"

    def resolve(self) -> None:
        self.inner.resolve()

    def describe(self, path: str = "") -> str:
        return self.inner.describe(path)

    def _examine(self, info: ObjectInfo) -> ObjectInfo:
        """The plaintext view of one inner object (reads its header when it is encrypted)."""
        if info.path.startswith(MANIFEST_DIR + "/"):
            with self._lock:
                self._plain[info.path] = info
            return info
        source = StoreSource(self.inner, info)
        if info.size < PREFIX_LEN or source.read_exact(0, 8) != b"MFENIGMA":
            ome = self._examine_ome(info, source)
            if ome is not None:
                return ome
            log.info("%s is not encrypted: copied as it is", self.inner.describe(info.path))
            with self._lock:
                self._plain[info.path] = info
            if info.etag is None and info.mtime_ns is not None:
                # This view is not a local store (no source hashing), so name the version for skip-if-unchanged.
                return replace(info, etag=f"plain.{info.size}.{info.mtime_ns}")
            return info
        header = read_header(source)
        plain, chunks = body_layout(header, info.size, obj=source.describe)
        with self._lock:
            self._sealed[info.path] = _Sealed(info, header, plain, chunks)
        # A distinct etag marks the plaintext view (no '-': it must not look like a multipart ETag).
        etag = clean_etag(info.etag)
        if etag is None and info.mtime_ns is not None:
            etag = f"{info.size}.{info.mtime_ns}"  # local files: size + mtime identify the version
        return ObjectInfo(
            path=info.path,
            size=plain,
            etag=f"enigma.{etag.replace('-', '.')}" if etag else None,
            version=info.version,
            mtime_ns=info.mtime_ns,
        )

    def _examine_ome(self, info: ObjectInfo, source: StoreSource) -> ObjectInfo | None:
        """The plaintext view of an OME-encrypted object (None: it is in clear); reads nonce and tag."""
        if not self.providers.ome_configured() or info.size < omeformat.OVERHEAD:
            return None
        if omeformat.looks_plain(source.read_exact(0, min(info.size, 512)), info.size):
            return None
        nonce = source.read_exact(0, omeformat.NONCE_SIZE)
        tag = source.read_exact(info.size - omeformat.TAG_SIZE, omeformat.TAG_SIZE)
        with self._lock:
            self._ome[info.path] = _OmeSealed(info, nonce, tag)
        etag = clean_etag(info.etag) or (f"{info.size}.{info.mtime_ns}" if info.mtime_ns is not None else None)
        return ObjectInfo(
            path=info.path,
            size=info.size - omeformat.OVERHEAD,
            etag=f"ome.{etag.replace('-', '.')}" if etag else None,
            version=info.version,
            mtime_ns=info.mtime_ns,
        )

    def _read_ome(self, path: str, sealed: _OmeSealed, start: int, length: int) -> Iterator[bytes]:
        if length <= 0:
            return
        key = self.providers.ome_data_key()
        if key is None:  # ome_configured() held when the object was examined
            raise UsageError("OME-encrypted files need the OCI vault data key", obj=self.inner.describe(path))
        plain = sealed.inner.size - omeformat.OVERHEAD
        with sealed.lock:
            if not sealed.verified:
                # A GCM message authenticates only whole: check the tag before any plaintext leaves.
                body = self.inner.read(path, omeformat.NONCE_SIZE, plain, info=sealed.inner)
                omeformat.authenticate(key, sealed.nonce, sealed.tag, body, obj=self.inner.describe(path))
                sealed.verified = True
        first = start - start % omeformat.BLOCK
        pieces = self.inner.read(path, omeformat.NONCE_SIZE + first, start + length - first, info=sealed.inner)
        yield from omeformat.decrypt_range(key, sealed.nonce, pieces, start, length)

    def list(self) -> Iterator[ObjectInfo]:
        infos = list(self.inner.list())
        with ThreadPoolExecutor(max_workers=max(1, min(self.list_workers, len(infos) or 1))) as pool:
            yield from pool.map(self._examine, infos)

    def stat(self, path: str) -> ObjectInfo | None:
        info = self.inner.stat(path)
        return None if info is None else self._examine(info)

    def _cipher(self, sealed: _Sealed, path: str) -> ChunkCipher:
        with self._lock:
            if sealed.cipher is None:
                block = sealed.header.key_block
                data_key = self.providers.get(block.provider).unwrap(block)
                sealed.cipher = ChunkCipher(sealed.header, data_key, obj=self.inner.describe(path))
            return sealed.cipher

    def _entry(self, path: str) -> _Sealed | _OmeSealed | ObjectInfo:
        with self._lock:
            found: _Sealed | _OmeSealed | ObjectInfo | None = (
                self._sealed.get(path) or self._ome.get(path) or self._plain.get(path)
            )
        if found is None:
            self.stat(path)
            with self._lock:
                found = self._sealed.get(path) or self._ome.get(path) or self._plain.get(path)
        if found is None:
            from modelferry.errors import NotFoundError

            raise NotFoundError(f"{self.inner.describe(path)} does not exist", obj=self.inner.describe(path))
        return found

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        entry = self._entry(path)
        if isinstance(entry, ObjectInfo):
            return self.inner.read(path, start, length, info=entry)
        if isinstance(entry, _OmeSealed):
            return self._read_ome(path, entry, start, length)
        return self._read_plain(path, entry, start, length)

    def _read_plain(self, path: str, sealed: _Sealed, start: int, length: int) -> Iterator[bytes]:
        if length <= 0:
            return
        cipher = self._cipher(sealed, path)
        chunk = sealed.header.chunk_size
        first = start // chunk
        last = (start + length - 1) // chunk
        body = sealed.inner.size - sealed.header.size
        ct_start = first * (chunk + TAG_SIZE)
        ct_end = min((last + 1) * (chunk + TAG_SIZE), body)
        pieces = self.inner.read(path, sealed.header.size + ct_start, ct_end - ct_start, info=sealed.inner)
        skip = start - first * chunk
        left = length
        # One worker per read: the engine already runs many reads in parallel.
        for plain in open_stream(cipher, pieces, ct_end - ct_start, first, sealed.chunks, 1):
            view = memoryview(plain)[skip:]
            skip = 0
            if len(view) > left:
                view = view[:left]
            left -= len(view)
            if view:
                yield bytes(view) if len(view) != len(plain) else plain
            if left == 0:
                return

    def read_bytes(self, path: str) -> bytes | None:
        return self.inner.read_bytes(path) if path.startswith(MANIFEST_DIR + "/") else super().read_bytes(path)

    def close(self) -> None:
        self.providers.close()
        self.inner.close()


def decrypting(store: Store, providers: ProviderCache) -> DecryptingStore:
    """Wrap a source store for ``sync --decrypt``."""
    return DecryptingStore(store, providers)


def decrypting_source(store: Store) -> DecryptingStore:
    """``sync --decrypt``: the source seen through enigma; provider settings from MODELFERRY_ENIGMA__*."""
    return DecryptingStore(store, ProviderCache(load_enigma_settings()))
