"""What names and identifies an object the controller renders (pure): bounded names, owner references, and
the inputs hash that decides whether a live object still matches what should exist."""

from __future__ import annotations

import hashlib
import json
from typing import Any

GROUP = "modelferry.io"
VERSION = "v1alpha1"
ANNOTATION_HASH = "modelferry.io/inputs-hash"


def bounded_name(name: str, limit: int = 63) -> str:
    """``name`` if it fits in ``limit`` characters (the label value limit), else cut and ended by a hash.

    The hash covers the whole name, so two long names that share their first characters never get the
    same object name (and never replace each other's Job).
    """
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: limit - 11].rstrip('-.')}-{digest}"


def inputs_hash(*parts: Any) -> str:
    """A short stable digest of everything a Job depends on (never its values in clear)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def owner_reference(obj: dict[str, Any], *, controller: bool = True) -> dict[str, Any]:
    """An ownerReference to ``obj`` so the garbage collector removes the Job with it."""
    meta = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion", "v1"),
        "kind": obj.get("kind", "Secret"),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def recorded_hash(job: dict[str, Any] | None) -> str | None:
    """The inputs hash a live object (Job, Deployment, Service, ...) was rendered with."""
    if not job:
        return None
    return ((job.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_HASH)
