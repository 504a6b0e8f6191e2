"""docs/reference/metrics.md: the Prometheus metrics, read from each component's own registry."""

from __future__ import annotations

import importlib
from typing import Any

from tools.refdocs.tables import code, page, table

# (component, module, class, where it is served); each class builds its metrics on a registry of its own.
REGISTRIES: list[tuple[str, str, str, str]] = [
    ("controller", "modelferry.controller.operator.process", "Metrics", "`/metrics` on `--metrics-port` (8080)"),
    ("node agent", "modelferry.controller.agent.metrics", "AgentMetrics", "`/metrics` on `--port` (8080)"),
    ("modelferry serve", "modelferry.serve.metrics", "ServeMetrics", "`/metrics` on `--port` (8000)"),
]
SERIES = {"histogram": "_bucket, _sum, _count", "summary": "_sum, _count"}  # the series a family exposes


def metric_rows(holder: Any) -> list[tuple[str, ...]]:
    """One row per metric object on ``holder``, in the order the registry holds them."""
    metrics = [value for value in vars(holder).values() if hasattr(value, "_labelnames") and hasattr(value, "_name")]
    by_name = {m._name: m for m in metrics}
    rows: list[tuple[str, ...]] = []
    for family in holder.registry.collect():
        metric = by_name.get(family.name)
        labels = ", ".join(code(label) for label in metric._labelnames) if metric is not None else ""
        exposed = family.name + ("_total" if family.type == "counter" else "")
        series = SERIES.get(family.type)
        shown = code(exposed) + (f" ({series})" if series else "")
        rows.append((shown, family.type, labels, family.documentation))
    return rows


def render() -> str:
    body: list[str] = []
    for component, module, name, served in REGISTRIES:
        holder = getattr(importlib.import_module(module), name)()
        body += [f"## The {component}", "", f"`{module}.{name}`, served at {served}.", ""]
        body += table(["metric", "type", "labels", "meaning"], metric_rows(holder))
    intro = (
        "Every Prometheus metric, listed from the registry each component builds (names follow "
        "`modelferry_<component>_<noun>_<unit>`). Counters are exposed with the `_total` suffix; histograms "
        "as `_bucket`, `_sum` and `_count`. The training sidecar sends its metrics to MLflow, not to Prometheus "
        "([training](../training.md))."
    )
    return page("Metrics reference", intro, body)
