"""Where a ModelSync put its model (pure): what TrainingRuns and ModelServers read from finished ModelSyncs."""

from __future__ import annotations

from typing import Any

from modelferry.controller.workload.secrets import secret_data


def modelsync_target(modelsync: dict[str, Any], secrets: dict[str, dict[str, Any]]) -> str | None:
    """Where a ModelSync put the model: its target URI, or the data connection's bucket and path."""
    target = (modelsync.get("spec") or {}).get("target") or {}
    if target.get("uri"):
        return str(target["uri"])
    connection = target.get("dataConnection")
    bucket = secret_data(secrets.get(connection)).get("AWS_S3_BUCKET") if connection else None
    if not bucket:
        return None
    path = str(target.get("path") or "models/").strip("/")
    return f"s3://{bucket}/{path}" if path else f"s3://{bucket}"


def synced_models(modelsyncs: list[dict[str, Any]], secrets: dict[str, dict[str, Any]]) -> dict[str, str]:
    """ModelSync name -> target URI, for the ModelSyncs of one namespace that finished syncing."""
    out: dict[str, str] = {}
    for modelsync in modelsyncs:
        if (modelsync.get("status") or {}).get("phase") != "Succeeded":
            continue
        uri = modelsync_target(modelsync, secrets)
        if uri:
            out[str((modelsync.get("metadata") or {}).get("name"))] = uri
    return out
