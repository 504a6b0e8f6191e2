"""Node selection: nodeSelector and nodeAffinity, table-driven, affinity edge cases included."""

from __future__ import annotations

from typing import Any

import pytest

from modelferry.controller.agent.selection import node_wants
from modelferry.errors import UsageError

NODE = {
    "metadata": {
        "name": "gpu-node-1",
        "labels": {
            "node.kubernetes.io/instance-type": "BM.GPU.H100.8",
            "nvidia.com/gpu.count": "8",
            "zone": "a",
            "weird": "x1",
        },
    }
}


def affinity(*terms: dict[str, Any]) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    req: dict[str, Any] = {"key": key, "operator": op}
    if values:
        req["values"] = list(values)
    return {"matchExpressions": [req]}


CASES: list[tuple[str, dict[str, Any] | None, bool]] = [
    ("no storage spec: every node", None, True),
    ("empty selector and affinity: every node", {}, True),
    ("selector matches", {"nodeSelector": {"zone": "a"}}, True),
    ("selector value differs", {"nodeSelector": {"zone": "b"}}, False),
    ("selector label missing", {"nodeSelector": {"rack": "1"}}, False),
    ("selector needs all labels", {"nodeSelector": {"zone": "a", "nvidia.com/gpu.count": "4"}}, False),
    ("In matches", affinity(expr("zone", "In", "a", "b")), True),
    ("In misses", affinity(expr("zone", "In", "c")), False),
    ("In on a missing label", affinity(expr("rack", "In", "1")), False),
    ("NotIn matches", affinity(expr("zone", "NotIn", "b")), True),
    ("NotIn misses", affinity(expr("zone", "NotIn", "a")), False),
    ("NotIn on a missing label matches", affinity(expr("rack", "NotIn", "1")), True),
    ("Exists", affinity(expr("zone", "Exists")), True),
    ("Exists missing", affinity(expr("rack", "Exists")), False),
    ("DoesNotExist", affinity(expr("rack", "DoesNotExist")), True),
    ("DoesNotExist present", affinity(expr("zone", "DoesNotExist")), False),
    ("Gt true", affinity(expr("nvidia.com/gpu.count", "Gt", "4")), True),
    ("Gt equal is false", affinity(expr("nvidia.com/gpu.count", "Gt", "8")), False),
    ("Lt true", affinity(expr("nvidia.com/gpu.count", "Lt", "9")), True),
    ("Lt false", affinity(expr("nvidia.com/gpu.count", "Lt", "8")), False),
    ("Gt on a non-numeric label is false", affinity(expr("weird", "Gt", "0")), False),
    ("Gt on a missing label is false", affinity(expr("rack", "Gt", "0")), False),
    ("terms are ORed", affinity(expr("zone", "In", "z"), expr("zone", "In", "a")), True),
    (
        "expressions in a term are ANDed",
        affinity(
            {
                "matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["a"]},
                    {"key": "rack", "operator": "Exists"},
                ]
            }
        ),
        False,
    ),
    (
        "matchFields on the node name",
        affinity({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-node-1"]}]}),
        True,
    ),
    (
        "matchFields other node",
        affinity({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["gpu-node-1"]}]}),
        False,
    ),
    ("an empty term matches nothing", affinity({}), False),
    ("no terms match nothing", affinity(), False),
    (
        "preferred terms never decide",
        {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1}]}},
        True,
    ),
    ("selector and affinity both apply", {"nodeSelector": {"zone": "b"}, **affinity(expr("zone", "Exists"))}, False),
]


@pytest.mark.parametrize(("storage", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_selection_table(storage: dict[str, Any] | None, expected: bool) -> None:
    assert node_wants(storage, NODE) is expected


def test_node_without_labels() -> None:
    assert node_wants({"nodeSelector": {"zone": "a"}}, {"metadata": {"name": "n"}}) is False
    assert node_wants(affinity(expr("zone", "DoesNotExist")), {"metadata": {"name": "n"}}) is True


@pytest.mark.parametrize(
    "bad",
    [
        affinity(expr("zone", "Like", "a")),
        affinity(expr("nvidia.com/gpu.count", "Gt", "a")),
        affinity(expr("nvidia.com/gpu.count", "Gt", "1", "2")),
    ],
)
def test_invalid_affinity_is_a_usage_error(bad: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        node_wants(bad, NODE)
