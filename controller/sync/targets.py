"""Where a ModelSync put its model (pure): what TrainingRuns and ModelServers read from finished ModelSyncs."""

from __future__ import annotations

from typing import Any

from controller.workload.secrets import secret_data


def modelsync_target(ms: dict[str, Any], secrets: dict[str, dict[str, Any]]) -> str | None:
    """Where a ModelSync put the model: its target URI, or the data connection's bucket and path."""
    target = (ms.get("spec") or {}).get("target") or {}
    if target.get("uri"):
        return str(target["uri"])
    dc = target.get("dataConnection")
    bucket = secret_data(secrets.get(dc)).get("AWS_S3_BUCKET") if dc else None
    if not bucket:
        return None
    path = str(target.get("path") or "models/").strip("/")
    return f"s3://{bucket}/{path}" if path else f"s3://{bucket}"


def synced_models(modelsyncs: list[dict[str, Any]], secrets: dict[str, dict[str, Any]]) -> dict[str, str]:
    """ModelSync name -> target URI, for the ModelSyncs of one namespace that finished syncing."""
    out: dict[str, str] = {}
    for ms in modelsyncs:
        if (ms.get("status") or {}).get("phase") != "Succeeded":
            continue
        uri = modelsync_target(ms, secrets)
        if uri:
            out[str((ms.get("metadata") or {}).get("name"))] = uri
    return out
