"""Which objects modelferry's controller made, and for whom: the labels it writes and the one check on them."""

from __future__ import annotations

from typing import Any

MANAGED_BY = "modelferry-controller"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_OWNER_KIND = "modelferry.io/owner-kind"
LABEL_OWNER_NAME = "modelferry.io/owner-name"


def owned_by(obj: dict[str, Any] | None, kind: str, name: str) -> bool:
    """Whether the controller made ``obj`` for the ``kind`` object ``name`` (it never touches anyone else's)."""
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    return (
        labels.get(LABEL_MANAGED_BY) == MANAGED_BY
        and labels.get(LABEL_OWNER_KIND) == kind
        and labels.get(LABEL_OWNER_NAME) == name
    )
