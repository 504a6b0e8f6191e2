"""What the agent publishes about its node: ConfigMap entries and node labels (pure rendering and diffs).

The ConfigMap is named after the node, in the agent's namespace; each model has
one key (``ns.basemodel.name`` / ``clusterbasemodel.name``) holding JSON
``{"name", "status", "config"}`` like OME's, plus ``node-resources``. Node labels
are ``<prefix>/<ns>.basemodel.<name>=Ready|Updating|Failed``; a name part longer
than 63 characters is replaced by a readable head plus a hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelferry.controller.agent.tasks import ModelRef

RESOURCES_KEY = "node-resources"
MAX_LABEL_NAME = 63
_LABEL_OK = re.compile(r"[^A-Za-z0-9._-]")


class ModelStatus(StrEnum):
    READY = "Ready"
    UPDATING = "Updating"
    FAILED = "Failed"
    DELETED = "Deleted"


@dataclass
class ModelEntry:
    """One model's state on this node."""

    ref: ModelRef
    status: ModelStatus
    config: dict[str, Any] | None = None
    message: str | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        body: dict[str, Any] = {"name": self.ref.name, "status": str(self.status)}
        if self.ref.namespace:
            body["namespace"] = self.ref.namespace
        body["kind"] = self.ref.kind
        if self.config:
            body["config"] = self.config
        if self.reason:
            body["reason"] = self.reason
        if self.message:
            body["message"] = self.message
        body.update(self.extra)
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


def parse_entry(value: str) -> dict[str, Any] | None:
    """An entry as written by any agent; None when someone wrote garbage there."""
    try:
        body = json.loads(value)
    except (TypeError, json.JSONDecodeError):
        return None
    return body if isinstance(body, dict) else None


def desired_data(entries: dict[ModelRef, ModelEntry], resources: dict[str, Any] | None) -> dict[str, str]:
    """The full ConfigMap data the agent wants (Deleted entries are dropped, as OME does)."""
    data = {ref.key: e.render() for ref, e in entries.items() if e.status != ModelStatus.DELETED}
    if resources is not None:
        data[RESOURCES_KEY] = json.dumps(resources, sort_keys=True, separators=(",", ":"))
    return data


def data_patch(current: dict[str, str] | None, desired: dict[str, str]) -> dict[str, str | None] | None:
    """A merge patch of ``data`` turning ``current`` into ``desired`` (None when equal); nulls delete keys."""
    current = current or {}
    patch: dict[str, str | None] = {k: v for k, v in desired.items() if current.get(k) != v}
    patch.update({k: None for k in current if k not in desired})
    return patch or None


def label_key(prefix: str, ref: ModelRef) -> str:
    """``prefix/name-part``; name parts over 63 characters become ``head-<hash>``."""
    name = _LABEL_OK.sub("-", ref.key)
    if len(name) > MAX_LABEL_NAME:
        digest = hashlib.sha256(ref.key.encode()).hexdigest()[:16]
        head = name[: MAX_LABEL_NAME - len(digest) - 1].rstrip("._-")
        name = f"{head}-{digest}"
    name = name.strip("._-") or hashlib.sha256(ref.key.encode()).hexdigest()[:16]
    return f"{prefix}/{name}"


def labels_patch(
    prefix: str, current: dict[str, str] | None, states: dict[ModelRef, ModelStatus]
) -> dict[str, str | None] | None:
    """Label changes (merge patch of metadata.labels) to match ``states``; our stale labels are removed."""
    current = current or {}
    desired = {label_key(prefix, ref): str(s) for ref, s in states.items() if s != ModelStatus.DELETED}
    patch: dict[str, str | None] = {k: v for k, v in desired.items() if current.get(k) != v}
    patch.update({k: None for k in current if k.startswith(prefix + "/") and k not in desired})
    return patch or None
