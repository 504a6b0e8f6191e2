"""Should this node hold a model? nodeSelector and nodeAffinity evaluated like the scheduler does.

``spec.storage.nodeAffinity`` is a Kubernetes NodeAffinity: only
``requiredDuringSchedulingIgnoredDuringExecution`` decides placement (preferred
terms are hints for the scheduler, never a reason to copy a model). Terms are
ORed; the expressions and fields inside one term are ANDed; an empty term list
matches nothing, as in Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelferry.errors import UsageError


def _as_int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{what}: Gt/Lt need an integer, got {value!r}") from None


def match_requirement(values_of: Mapping[str, str], req: Mapping[str, Any]) -> bool:
    """One NodeSelectorRequirement against a mapping (labels, or fields for matchFields)."""
    key = str(req.get("key", ""))
    op = str(req.get("operator", ""))
    values = [str(v) for v in req.get("values") or []]
    present = key in values_of
    actual = values_of.get(key, "")
    if op == "In":
        return present and actual in values
    if op == "NotIn":
        return not present or actual not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if len(values) != 1:
            raise UsageError(f"nodeAffinity {key}: {op} needs exactly one value")
        if not present:
            return False
        try:
            have = int(actual)
        except ValueError:
            return False  # a non-numeric label never satisfies Gt/Lt
        want = _as_int(values[0], f"nodeAffinity {key}")
        return have > want if op == "Gt" else have < want
    raise UsageError(
        f"nodeAffinity {key}: unknown operator {op!r}", hint="Use In, NotIn, Exists, DoesNotExist, Gt or Lt"
    )


def match_term(labels: Mapping[str, str], fields: Mapping[str, str], term: Mapping[str, Any]) -> bool:
    """A NodeSelectorTerm: all expressions and all fields hold. An empty term matches nothing."""
    exprs = term.get("matchExpressions") or []
    field_reqs = term.get("matchFields") or []
    if not exprs and not field_reqs:
        return False
    return all(match_requirement(labels, r) for r in exprs) and all(match_requirement(fields, r) for r in field_reqs)


def node_fields(node: Mapping[str, Any]) -> dict[str, str]:
    """Fields usable in matchFields (Kubernetes supports metadata.name only)."""
    return {"metadata.name": str((node.get("metadata") or {}).get("name", ""))}


def node_wants(storage: Mapping[str, Any] | None, node: Mapping[str, Any]) -> bool:
    """True when the model's ``spec.storage`` selects this node (no selector and no affinity: every node)."""
    storage = storage or {}
    labels = {str(k): str(v) for k, v in ((node.get("metadata") or {}).get("labels") or {}).items()}
    selector = storage.get("nodeSelector") or {}
    if any(labels.get(str(k)) != str(v) for k, v in selector.items()):
        return False
    affinity = storage.get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    terms = required.get("nodeSelectorTerms") or []
    fields = node_fields(node)
    return any(match_term(labels, fields, t) for t in terms)
