"""Pieces of URI grammar the backends share: the error, prefix cleaning, name patterns."""

from __future__ import annotations

import re

from modelferry.backends.registry import Location, Parts, accepted_forms
from modelferry.errors import InvalidURIError

BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def fail(raw: str, why: str) -> InvalidURIError:
    """The invalid-URI error, with every registered form as the hint."""
    return InvalidURIError(
        f"invalid storage URI {raw!r}: {why}",
        hint=f"Accepted forms: {accepted_forms()}",
    )


def clean_prefix(raw: str, prefix: str) -> str:
    """A prefix without surrounding slashes; '.', '..' and empty segments refused."""
    prefix = prefix.strip("/")
    if not prefix:
        return ""
    parts = prefix.split("/")
    if any(p in (".", "..") for p in parts):
        raise fail(raw, "'.' and '..' are not allowed in a prefix")
    if any(p == "" for p in parts):
        raise fail(raw, "empty path segment ('//') in the prefix")
    return prefix


def parse_bucket(raw: str, scheme: str, rest: str, revision: str | None) -> Parts:
    """``scheme://bucket[/prefix]`` (S3-compatible stores)."""
    bucket, _, prefix = rest.partition("/")
    if not bucket or not BUCKET_RE.match(bucket):
        raise fail(raw, f"bad bucket name {bucket!r}")
    return Parts(bucket=bucket, prefix=clean_prefix(raw, prefix))


def format_bucket(uri: Location) -> str:
    return f"{uri.scheme}://{uri.bucket}/{uri.prefix}".rstrip("/")
