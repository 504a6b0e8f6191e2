"""Status conditions as the Kubernetes API conventions define them: one constructor and one transition rule.

The rule: a condition's ``lastTransitionTime`` changes only when its ``status`` changes. A new reason or
message with the same status keeps the time (so a status rewrite is not a transition), as
``meta.SetStatusCondition`` does in Go controllers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modelferry.controller.api.meta import ConditionStatus

Condition = dict[str, Any]


def condition(kind: str, ok: bool, reason: str, message: str, now: str) -> Condition:
    """A condition of type ``kind`` (a kind's ``ConditionType``): status ``True``/``False``, a CamelCase reason,
    a message, stamped ``now``. Plain strings in, so the status compares equal to what the API server returns."""
    return {
        "type": str(kind),
        "status": (ConditionStatus.TRUE if ok else ConditionStatus.FALSE).value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }


def carry_transition_times(
    conditions: Iterable[Condition], previous: Iterable[Any] | None, now: str = ""
) -> list[Condition]:
    """``conditions`` with each ``lastTransitionTime`` kept from the previous condition of its type when the status
    is unchanged; otherwise the condition's own time, or ``now`` when it has none."""
    before = {c.get("type"): c for c in previous or [] if isinstance(c, dict)}
    out = []
    for cond in conditions:
        old = before.get(cond.get("type")) or {}
        if old.get("status") == cond.get("status") and old.get("lastTransitionTime"):
            since = old["lastTransitionTime"]
        else:
            since = cond.get("lastTransitionTime") or now
        out.append({**cond, "lastTransitionTime": since})
    return out


def keep_transition_times(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Status ``new`` with the transition rule applied against status ``old`` (what a status write does)."""
    if not new.get("conditions"):
        return new
    return {**new, "conditions": carry_transition_times(new["conditions"], old.get("conditions"))}
