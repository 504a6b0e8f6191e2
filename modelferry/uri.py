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
from urllib.parse import unquote

from modelferry.errors import InvalidURIError, UnsafePathError

ACCEPTED_FORMS = (
    "hf://org/repo[@revision] (or hf://org/repo:revision), "
    "s3://bucket[/prefix], cos://bucket[/prefix], "
    "oci://n/{namespace}/b/{bucket}/o/{prefix}, "
    "pvc://[namespace:]claim[/subpath], file:///absolute/path or a plain path"
)

SCHEMES = ("hf", "s3", "cos", "oci", "pvc", "file")

_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
_HF_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_OCI_RE = re.compile(r"^oci://n/(?P<ns>[^/]+)/b/(?P<bucket>[^/]+)(?:/o(?:/(?P<prefix>.*))?)?$")


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
        return self.scheme in ("hf", "s3", "cos", "oci")

    @property
    def is_bucket(self) -> bool:
        return self.scheme in ("s3", "cos", "oci")

    @property
    def repo_id(self) -> str:
        return self.bucket

    def with_revision(self, revision: str) -> StorageURI:
        return replace(self, revision=revision)

    def child(self, relpath: str) -> StorageURI:
        """The URI of ``relpath`` under this one (a directory prefix)."""
        relpath = relpath.strip("/")
        if self.scheme == "file":
            return replace(self, path=str(Path(self.path) / relpath))
        joined = f"{self.prefix}/{relpath}" if self.prefix else relpath
        return replace(self, prefix=joined.strip("/"))

    def key(self, relpath: str) -> str:
        """Object key for ``relpath`` under this prefix."""
        relpath = relpath.lstrip("/")
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def __str__(self) -> str:
        if self.scheme == "hf":
            kind = "datasets/" if self.repo_type == "dataset" else ""
            rev = f"@{self.revision}" if self.revision else ""
            return f"hf://{kind}{self.bucket}{rev}"
        if self.scheme in ("s3", "cos"):
            return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")
        if self.scheme == "oci":
            return f"oci://n/{self.namespace}/b/{self.bucket}/o/{self.prefix}".rstrip("/")
        if self.scheme == "pvc":
            ns = f"{self.namespace}:" if self.namespace else ""
            return f"pvc://{ns}{self.bucket}/{self.prefix}".rstrip("/")
        return f"file://{self.path}"


def _fail(raw: str, why: str) -> InvalidURIError:
    return InvalidURIError(
        f"invalid storage URI {raw!r}: {why}",
        hint=f"Accepted forms: {ACCEPTED_FORMS}",
    )


def _clean_prefix(raw: str, prefix: str) -> str:
    prefix = prefix.strip("/")
    if not prefix:
        return ""
    parts = prefix.split("/")
    if any(p in (".", "..") for p in parts):
        raise _fail(raw, "'.' and '..' are not allowed in a prefix")
    if any(p == "" for p in parts):
        raise _fail(raw, "empty path segment ('//') in the prefix")
    return prefix


def parse_uri(raw: str, *, revision: str | None = None) -> StorageURI:
    """Parse any accepted storage URI; raise :class:`InvalidURIError` with the forms on error.

    ``revision`` (from ``--revision``) overrides a revision written in an ``hf://`` URI.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise _fail(str(raw), "empty")
    text = raw.strip()
    if "://" not in text:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text) and not re.match(r"^[A-Za-z]:[\\/]", text):
            scheme = text.split(":", 1)[0]
            raise _fail(raw, f"unknown scheme {scheme!r}")
        return StorageURI(scheme="file", raw=raw, path=str(Path(text).expanduser().absolute()))
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise _fail(raw, f"unknown scheme {scheme!r}")
    if scheme == "file":
        if not rest.startswith("/"):
            raise _fail(raw, "file:// needs an absolute path (file:///abs/path)")
        return StorageURI(scheme="file", raw=raw, path=str(Path(unquote(rest))))
    if scheme == "hf":
        return _parse_hf(raw, rest, revision)
    if scheme in ("s3", "cos"):
        bucket, _, prefix = rest.partition("/")
        if not bucket or not _BUCKET_RE.match(bucket):
            raise _fail(raw, f"bad bucket name {bucket!r}")
        return StorageURI(scheme=scheme, raw=raw, bucket=bucket, prefix=_clean_prefix(raw, prefix))
    if scheme == "oci":
        match = _OCI_RE.match(text)
        if not match:
            raise _fail(
                raw,
                "Oracle Object Storage URIs look like oci://n/{namespace}/b/{bucket}/o/{prefix}",
            )
        return StorageURI(
            scheme="oci",
            raw=raw,
            namespace=match["ns"],
            bucket=match["bucket"],
            prefix=_clean_prefix(raw, unquote(match["prefix"] or "")),
        )
    # pvc
    head, _, subpath = rest.partition("/")
    namespace, _, claim = head.rpartition(":")
    if not claim or not _DNS_SUBDOMAIN_RE.match(claim) or len(claim) > 253:
        raise _fail(raw, f"bad PersistentVolumeClaim name {claim!r}")
    if namespace and not _DNS_LABEL_RE.match(namespace):
        raise _fail(raw, f"bad namespace {namespace!r}")
    return StorageURI(scheme="pvc", raw=raw, bucket=claim, namespace=namespace, prefix=_clean_prefix(raw, subpath))


def _parse_hf(raw: str, rest: str, revision: str | None) -> StorageURI:
    repo_type = "model"
    for kind, name in (("datasets/", "dataset"), ("models/", "model")):
        if rest.startswith(kind):
            repo_type, rest = name, rest[len(kind) :]
    rev = ""
    if "@" in rest:
        rest, rev = rest.split("@", 1)
    elif rest.count(":") == 1:
        rest, rev = rest.split(":", 1)
    rest = rest.strip("/")
    parts = rest.split("/")
    if len(parts) != 2 or not all(_HF_PART_RE.match(p) for p in parts) or ".." in rest:
        raise _fail(raw, "a Hugging Face repo id is 'org/name'")
    if rev == "" and ("@" in raw or raw.rstrip().endswith(":")):
        raise _fail(raw, "empty revision")
    final_rev = revision or unquote(rev)
    return StorageURI(scheme="hf", raw=raw, bucket=rest, revision=final_rev, repo_type=repo_type)


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
