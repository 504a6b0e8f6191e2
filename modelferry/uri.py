"""The one storage-URI parser, used both to validate specs and to do work.

Accepted forms (see ``ACCEPTED_FORMS``)::

    hf://org/repo[@revision]        hf://org/repo:revision
    s3://bucket[/prefix]            cos://bucket[/prefix]
    oci://n/{namespace}/b/{bucket}/o/{prefix}
    pvc://[namespace:]claim[/subpath]
    file:///abs/path                /abs/path or relative/path

Prefixes are directory prefixes: ``s3://b/model`` covers ``model/...`` and never
``model-hf/...`` (see :func:`under_prefix`).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, replace
from pathlib import Path

from modelferry.backends import backend_for, find
from modelferry.backends.grammar import fail
from modelferry.backends.registry import accepted_forms
from modelferry.backends.registry import schemes as registered_schemes
from modelferry.errors import UnsafePathError

# The forms and schemes of the backends registered at import (modelferry.backends); the parser reads
# the registry itself, so a backend registered later is accepted too.
ACCEPTED_FORMS = accepted_forms()
SCHEMES = registered_schemes()

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class StorageURI:
    """A parsed storage location. Fields not used by a scheme are empty strings."""

    scheme: str
    raw: str
    bucket: str = ""  # s3/cos/oci bucket; hf repo id (org/name); pvc claim
    prefix: str = ""  # object prefix without leading/trailing slash; pvc subpath
    namespace: str = ""  # oci namespace; pvc namespace
    revision: str = ""  # hf revision
    path: str = ""  # file: absolute local path
    repo_type: str = "model"  # hf: model | dataset

    @property
    def is_remote(self) -> bool:
        return backend_for(self.scheme).remote

    @property
    def is_bucket(self) -> bool:
        return backend_for(self.scheme).bucket_store

    @property
    def repo_id(self) -> str:
        return self.bucket

    def with_revision(self, revision: str) -> StorageURI:
        return replace(self, revision=revision)

    def child(self, relpath: str) -> StorageURI:
        """The URI of ``relpath`` under this one (a directory prefix)."""
        relpath = relpath.strip("/")
        if backend_for(self.scheme).local_path:
            return replace(self, path=str(Path(self.path) / relpath))
        joined = f"{self.prefix}/{relpath}" if self.prefix else relpath
        return replace(self, prefix=joined.strip("/"))

    def key(self, relpath: str) -> str:
        """Object key for ``relpath`` under this prefix."""
        relpath = relpath.lstrip("/")
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def __str__(self) -> str:
        return backend_for(self.scheme).format(self)


def parse_uri(raw: str, *, revision: str | None = None) -> StorageURI:
    """Parse any accepted storage URI; raise :class:`InvalidURIError` with the forms on error.

    ``revision`` (from ``--revision``) overrides a revision written in an ``hf://`` URI. The grammar
    of each scheme is its backend's (``modelferry.backends``).
    """
    if not isinstance(raw, str) or not raw.strip():
        raise fail(str(raw), "empty")
    text = raw.strip()
    if "://" not in text:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text) and not re.match(r"^[A-Za-z]:[\\/]", text):
            scheme = text.split(":", 1)[0]
            raise fail(raw, f"unknown scheme {scheme!r}")
        return StorageURI(scheme="file", raw=raw, path=str(Path(text).expanduser().absolute()))
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    backend = find(scheme)
    if backend is None:
        raise fail(raw, f"unknown scheme {scheme!r}")
    parts = backend.parse(raw, scheme, rest, revision)
    return StorageURI(
        scheme=scheme,
        raw=raw,
        bucket=parts.bucket,
        prefix=parts.prefix,
        namespace=parts.namespace,
        revision=parts.revision,
        path=parts.path,
        repo_type=parts.repo_type,
    )


def under_prefix(key: str, prefix: str) -> bool:
    """True when ``key`` lies under ``prefix`` at a directory boundary."""
    prefix = prefix.strip("/")
    return not prefix or key == prefix or key.startswith(prefix + "/")


def relative_key(key: str, prefix: str) -> str:
    """``key`` relative to ``prefix`` (which must contain it)."""
    prefix = prefix.strip("/")
    if not prefix:
        return key
    if key == prefix:
        return posixpath.basename(key)
    return key[len(prefix) + 1 :]


def safe_relpath(name: str, *, obj: str = "") -> str:
    """Validate a remote file name before it becomes a local path.

    Refuses absolute paths, ``..`` segments, backslashes that Windows tooling
    would treat as separators, NUL bytes and other control characters, names
    that are not UTF-8 (undecodable bytes of a local listing) and empty names.
    """
    if not name or "\x00" in name or "\\" in name:
        raise UnsafePathError(f"refusing remote file name {name!r}", obj=obj or name)
    if _CONTROL_RE.search(name):
        raise UnsafePathError(
            f"refusing file name {name!r}: it holds a control character (a newline could forge log lines)",
            obj=ascii(obj or name),
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePathError(f"refusing file name {name!a}: it is not valid UTF-8", obj=ascii(obj or name)) from None
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UnsafePathError(f"refusing absolute remote file name {name!r}", obj=obj or name)
    parts = name.split("/")
    if any(p in ("..", ".") for p in parts) or any(p == "" for p in parts):
        raise UnsafePathError(f"refusing remote file name {name!r} (it would escape the target)", obj=obj or name)
    return name
