"""Hashes whose running state can be saved and restored, for uploads that resume across runs.

A multipart upload to an object store keeps its finished parts on the server,
but the whole-file sha256 (and MD5 / git blob sha1 where the source's checksum
needs them) was computed in memory by the process that died. Re-reading the
finished parts from the source would cost a second download; instead the
engine saves the hash state at part boundaries next to the upload and the next
run continues from it.

``hashlib`` cannot export its state, so this module drives OpenSSL's one-shot
digest contexts (``SHA256_Init``/``Update``/``Final`` and the MD5 / SHA-1
equivalents, present in OpenSSL 1.1 and 3.x) through ``ctypes``: the context is
a small plain struct we own, so saving it is copying its bytes. The calls
release the GIL and use the same SHA-NI code as ``hashlib``. The state layout
belongs to the OpenSSL build and the CPU architecture, so saved states carry a
:func:`state_tag` and a state with another tag is not used (the upload then
starts over). Where libcrypto or these symbols are missing, :func:`available`
is False and uploads simply do not resume.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import functools
import platform
from dataclasses import dataclass, field
from typing import Any

CTX_BYTES = 128  # SHA256_CTX is 112 bytes, SHA_CTX 96, MD5_CTX 92: one size fits all three
_DIGEST_SIZE = {"sha256": 32, "md5": 16, "sha1": 20}
_PREFIX = {"sha256": "SHA256", "md5": "MD5", "sha1": "SHA1"}


@dataclass(frozen=True)
class _Crypto:
    funcs: dict[str, tuple[Any, Any, Any]]  # digest name -> (Init, Update, Final)
    tag: str


def _open_libcrypto() -> ctypes.CDLL | None:
    # The usual sonames first: find_library runs `ldconfig -p` in a subprocess (and slim images may lack it).
    for name in ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.dylib"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    found = ctypes.util.find_library("crypto")
    try:
        return ctypes.CDLL(found) if found else None
    except OSError:
        return None


@functools.cache
def _crypto() -> _Crypto | None:
    """libcrypto's digest functions and its state tag, loaded on first use (not at import)."""
    lib = _open_libcrypto()
    if lib is None:
        return None
    try:
        funcs = {}
        for algo, prefix in _PREFIX.items():
            init, update, final = (getattr(lib, f"{prefix}_{op}") for op in ("Init", "Update", "Final"))
            init.argtypes = [ctypes.c_void_p]
            update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
            final.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            for f in (init, update, final):
                f.restype = ctypes.c_int
            funcs[algo] = (init, update, final)
        version = lib.OpenSSL_version_num  # OpenSSL 1.1 and 3.x: 0xMNN.....
        version.restype = ctypes.c_ulong
        number = int(version())
    except (OSError, AttributeError):
        return None
    # The layout of a saved context belongs to the loaded libcrypto's major.minor and the CPU.
    return _Crypto(funcs, f"openssl-{number >> 28}.{(number >> 20) & 0xFF}-{platform.machine()}")


def available() -> bool:
    """True when hash states can be saved on this machine."""
    return _crypto() is not None


def state_tag() -> str:
    """What saved states are tagged with here; a state with another tag is not used."""
    crypto = _crypto()
    return crypto.tag if crypto is not None else "unavailable"


class ResumableHash:
    """One running digest (sha256, md5 or sha1) whose state is a few bytes."""

    def __init__(self, name: str, state: bytes | None = None) -> None:
        if name not in _DIGEST_SIZE:
            raise ValueError(f"unsupported digest {name}")
        crypto = _crypto()
        if crypto is None:
            raise RuntimeError("libcrypto's digest functions are not available")
        self.name = name
        self._init, self._update, self._final = crypto.funcs[name]
        self._ctx = ctypes.create_string_buffer(CTX_BYTES)
        if state is None:
            if self._init(self._ctx) != 1:
                raise RuntimeError(f"{name} init failed")
        else:
            if len(state) != CTX_BYTES:
                raise ValueError(f"a saved {name} state is {CTX_BYTES} bytes, got {len(state)}")
            ctypes.memmove(self._ctx, state, CTX_BYTES)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if isinstance(data, bytes):
            ptr: Any = data  # ctypes passes a bytes object's own buffer, no copy
            length = len(data)
        else:
            view = memoryview(data).cast("B")
            if view.readonly:
                ptr, length = bytes(view), view.nbytes  # read-only slices are rare (retried ranges): copy
            else:
                ptr, length = (ctypes.c_char * view.nbytes).from_buffer(view), view.nbytes
        if self._update(self._ctx, ptr, length) != 1:
            raise RuntimeError(f"{self.name} update failed")

    def state(self) -> bytes:
        """The running state, to restore with ``ResumableHash(name, state)``."""
        return self._ctx.raw

    def digest(self) -> bytes:
        """The digest of what was fed so far; the running state is left as it was."""
        ctx = ctypes.create_string_buffer(self._ctx.raw, CTX_BYTES)
        out = ctypes.create_string_buffer(_DIGEST_SIZE[self.name])
        if self._final(out, ctx) != 1:
            raise RuntimeError(f"{self.name} final failed")
        return out.raw

    def hexdigest(self) -> str:
        return self.digest().hex()


@dataclass(frozen=True)
class HashCheckpoint:
    """The hashes of a file's first ``position`` bytes: where a resumed upload carries on."""

    position: int
    states: dict[str, bytes] = field(default_factory=dict)
    tag: str = field(default_factory=state_tag)

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "tag": self.tag,
            "states": {k: base64.b64encode(v).decode() for k, v in sorted(self.states.items())},
        }

    @classmethod
    def from_json(cls, data: Any) -> HashCheckpoint | None:
        """The checkpoint in ``data``, or None when it is malformed or from another OpenSSL build."""
        try:
            if data["tag"] != state_tag():
                return None
            states = {str(k): base64.b64decode(v, validate=True) for k, v in dict(data["states"]).items()}
            position = int(data["position"])
        except (KeyError, TypeError, ValueError):
            return None
        if position < 0 or any(k not in _DIGEST_SIZE or len(v) != CTX_BYTES for k, v in states.items()):
            return None
        return cls(position=position, states=states)
