"""Checking a TrainingRun's spec before anything is created (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelferry.backends import backend_for
from modelferry.controller.api.v1alpha1.trainingrun import Runtime, TrainingRunSpec
from modelferry.errors import ModelferryError
from modelferry.source_policy import check_cluster_source
from modelferry.uri import parse_uri

RUNTIMES = tuple(r.value for r in Runtime)


@dataclass(frozen=True)
class Problem:
    """Why no Job exists: becomes ``Ready=False`` with this reason and message."""

    reason: str
    message: str


def _uri_problem(value: Any, where: str) -> Problem | None:
    if not isinstance(value, str) or not value:
        return Problem("InvalidSpec", f"{where} must be a storage URI")
    try:
        parse_uri(value)
    except ModelferryError as exc:
        return Problem("InvalidURI", f"{where}: {exc}")
    return None


def _source_problem(value: Any, where: str, roots: Sequence[str]) -> Problem | None:
    """A URI the sidecar stages from: also one the cluster side may read (no local paths in the pod)."""
    if (p := _uri_problem(value, where)) is not None:
        return p
    uri = parse_uri(value)
    # The Job mounts every claim its spec names (claim_mounts refuses other namespaces' claims itself).
    claims = [uri.bucket] if uri.scheme == "pvc" else []
    try:
        check_cluster_source(uri, allowed_local_roots=roots, mounted_claims=claims, where=where)
    except ModelferryError as exc:
        return Problem(exc.reason, str(exc))
    return None


def validate(
    spec: TrainingRunSpec, model_syncs: dict[str, str] | None = None, allowed_local_roots: Sequence[str] = ()
) -> Problem | None:
    """The first problem with ``spec``, or None. ``model_syncs`` maps ModelSync names to their target URI."""
    base = spec.base_model
    if not (base.uri or base.model_sync_ref):
        return Problem("InvalidSpec", "spec.baseModel needs uri or modelSyncRef.name")
    if base.uri:
        if (p := _source_problem(base.uri, "spec.baseModel.uri", allowed_local_roots)) is not None:
            return p
    elif base.model_sync_ref is not None:
        name = base.model_sync_ref.name
        if not name:
            return Problem("InvalidSpec", "spec.baseModel.modelSyncRef.name is empty")
        if name not in (model_syncs or {}):
            return Problem("BaseModelNotReady", f"ModelSync {name!r} does not exist or has not synced yet")
        where = f"the target of ModelSync {name!r} (spec.baseModel.modelSyncRef)"
        if (p := _source_problem((model_syncs or {})[name], where, allowed_local_roots)) is not None:
            return p
    if (p := _source_problem(spec.dataset.uri, "spec.dataset.uri", allowed_local_roots)) is not None:
        return p
    if (p := _uri_problem(spec.output.uri, "spec.output.uri")) is not None:
        return p
    scheme = parse_uri(spec.output.uri).scheme
    if not backend_for(scheme).can_be_target:
        return Problem("InvalidURI", f"spec.output.uri: {scheme}:// cannot be written to; use a bucket or a PVC")
    trainer = spec.trainer
    runtime, image = trainer.runtime, trainer.image
    if runtime and image:
        return Problem("InvalidSpec", "spec.trainer: give either runtime or image (with command), not both")
    if not runtime and not image:
        return Problem("InvalidSpec", "spec.trainer needs runtime (peft-lora) or image and command")
    if runtime and runtime not in RUNTIMES:
        if runtime.startswith("cohere"):
            return Problem(
                "RuntimeNotSupported", f"runtime {runtime!r} (OME's proprietary Cohere trainer) is not supported"
            )
        return Problem("RuntimeNotSupported", f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    if image and not trainer.command:
        return Problem("InvalidSpec", "spec.trainer.command is required with an image")
    if any(isinstance(v, dict | list) for v in spec.hyperparameters.values()):
        return Problem("InvalidSpec", "spec.hyperparameters must map names to scalar values")
    if spec.distributed.workers < 1:
        return Problem("InvalidSpec", "spec.distributed.workers must be 1 or more")
    if spec.distributed.gpus_per_worker < 0:
        return Problem("InvalidSpec", "spec.distributed.gpusPerWorker must be 0 or more")
    tracking = spec.mlflow.tracking_uri
    if tracking and not tracking.startswith(("http://", "https://", "databricks")):
        return Problem("InvalidSpec", "spec.mlflow.trackingUri must be an http(s) URL")
    return None
