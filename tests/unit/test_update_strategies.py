"""Every Deployment and DaemonSet we ship says how it is upgraded (a documented, minimal-downtime rollout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def workloads() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted((ROOT / "manifests").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in ("Deployment", "DaemonSet"):
                found.append((path, doc))
    return found


def test_every_workload_states_its_update_strategy() -> None:
    assert {doc["kind"] for _, doc in workloads()} >= {"Deployment", "DaemonSet"}
    for path, doc in workloads():
        key = "strategy" if doc["kind"] == "Deployment" else "updateStrategy"
        strategy = doc["spec"].get(key)
        assert strategy, f"{path.name}: {doc['kind']} {doc['metadata']['name']} has no {key}"
        assert strategy["type"] in ("RollingUpdate", "Recreate", "OnDelete")
        if strategy["type"] == "RollingUpdate":
            assert "maxUnavailable" in strategy["rollingUpdate"], f"{path.name}: say how many may be down"


def test_the_agent_rolls_one_node_at_a_time() -> None:
    [agent] = [doc for _, doc in workloads() if doc["kind"] == "DaemonSet"]
    assert agent["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1
