"""PersistentVolumeClaims named by ``pvc://`` URIs, mounted where the worker looks for them (pure).

A worker opens ``pvc://claim/subpath`` at ``<pvc root>/<claim>/<subpath>`` (``MODELFERRY_PVC_ROOT``,
``/mnt/pvc`` by default), so the claim is mounted whole at ``<pvc root>/<claim>``: read-only when it is
only read from, read-write when something is written to it. A claim lives in one namespace, so a URI
naming another namespace (``pvc://other:claim``) is refused: a pod can mount only its own claims, and a
tenant must not be told otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from modelferry.errors import ModelferryError
from modelferry.uri import parse_uri

PVC_ROOT = "/mnt/pvc"


@dataclass
class ClaimMounts:
    """Volumes and mounts for the claims one pod reads or writes; ``error`` when a URI cannot be mounted."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def volume_name(claim: str) -> str:
    """A volume name that is a DNS label whatever the claim's length (claims may have 253 characters)."""
    return "pvc-" + hashlib.sha256(claim.encode()).hexdigest()[:12]


def claim_mounts(uses: list[tuple[str, str, bool]], namespace: str, root: str = PVC_ROOT) -> ClaimMounts:
    """Mounts for ``uses``: ``(field, uri, writes)`` triples; URIs of other schemes are skipped.

    ``field`` names the spec field for the error message (``spec.source.uri``). A claim used by several
    fields is mounted once, read-write when any of them writes.
    """
    writable: dict[str, bool] = {}
    for where, raw, writes in uses:
        try:
            uri = parse_uri(raw)
        except ModelferryError:
            continue  # the caller's own validation reports a bad URI
        if uri.scheme != "pvc":
            continue
        if uri.namespace and uri.namespace != namespace:
            return ClaimMounts(
                error=(
                    f"{where}: claim {uri.bucket!r} is in namespace {uri.namespace!r}, but a pod can mount only "
                    f"claims of its own namespace {namespace!r}; copy the data into a claim here or use a bucket"
                )
            )
        writable[uri.bucket] = writable.get(uri.bucket, False) or writes
    result = ClaimMounts()
    for claim, writes in sorted(writable.items()):
        name = volume_name(claim)
        result.volumes.append(
            {"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": not writes}},
        )
        result.mounts.append({"name": name, "mountPath": f"{root}/{claim}", "readOnly": not writes})
    return result
