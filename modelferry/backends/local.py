"""Local disk: ``file:///abs/path`` (or a plain path) and ``pvc://[namespace:]claim[/subpath]``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from modelferry.backends.grammar import DNS_LABEL_RE, DNS_SUBDOMAIN_RE, clean_prefix, fail
from modelferry.backends.registry import Backend, Location, Parts


def parse_pvc(raw: str, scheme: str, rest: str, revision: str | None) -> Parts:
    head, _, subpath = rest.partition("/")
    namespace, _, claim = head.rpartition(":")
    if not claim or not DNS_SUBDOMAIN_RE.match(claim) or len(claim) > 253:
        raise fail(raw, f"bad PersistentVolumeClaim name {claim!r}")
    if namespace and not DNS_LABEL_RE.match(namespace):
        raise fail(raw, f"bad namespace {namespace!r}")
    return Parts(bucket=claim, namespace=namespace, prefix=clean_prefix(raw, subpath))


def format_pvc(uri: Location) -> str:
    ns = f"{uri.namespace}:" if uri.namespace else ""
    return f"pvc://{ns}{uri.bucket}/{uri.prefix}".rstrip("/")


def parse_file(raw: str, scheme: str, rest: str, revision: str | None) -> Parts:
    if not rest.startswith("/"):
        raise fail(raw, "file:// needs an absolute path (file:///abs/path)")
    return Parts(path=str(Path(unquote(rest))))


def format_file(uri: Location) -> str:
    return f"file://{uri.path}"


PVC = Backend(
    name="pvc",
    schemes=("pvc",),
    form="pvc://[namespace:]claim[/subpath]",
    parse=parse_pvc,
    format=format_pvc,
    opener="modelferry.storage.openers:open_pvc",
    remote=False,
)

FILE = Backend(
    name="file",
    schemes=("file",),
    form="file:///absolute/path or a plain path",
    parse=parse_file,
    format=format_file,
    opener="modelferry.storage.openers:open_file",
    remote=False,
    local_path=True,
)
