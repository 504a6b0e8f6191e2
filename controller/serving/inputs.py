"""A ModelServer's inputs (pure): the model and adapter it names, resolved to where they come from.

A node-cached BaseModel/ClusterBaseModel resolves to the agent's directory (by the agent's own path
rule, so a BaseModel cannot point into another namespace's directory); a ModelSync or TrainingRun to
its output URI once it succeeded (until then the server waits); a URI is pulled. What the API server
would refuse in the rendered Deployment (env entries, quantities) is said on the ModelServer first.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelferry.controller.agent.disk import OutsideNamespaceError, model_dir
from modelferry.controller.agent.entries import label_key
from modelferry.controller.agent.tasks import ModelRef
from modelferry.controller.api.v1alpha1.modelserver import ModelServerSpec
from modelferry.controller.config.controller import IMAGE
from modelferry.controller.config.serving import SERVE_IMAGE
from modelferry.errors import ModelferryError
from modelferry.uri import parse_uri


@dataclass(frozen=True)
class Problem:
    """Why nothing (or nothing new) can run: ``waiting`` for another object, else a spec to fix."""

    reason: str
    message: str
    waiting: bool = False


@dataclass(frozen=True)
class ServingContext:
    """Facts about the cluster, the controller's defaults, and the objects the ModelServer names."""

    image: str = IMAGE  # `modelferry sync` in the fetch init containers
    serve_image: str = SERVE_IMAGE  # `modelferry serve` (needs torch)
    models_root: str = "/mnt/models"  # the agent's hostPath
    label_prefix: str = "models.modelferry.io"  # the agent's node labels
    run_as_user: int | None = 1000  # for engine images whose user is root; None on OpenShift (it assigns one)
    cluster_domain: str = "cluster.local"
    base_models: dict[str, dict[str, Any]] = field(default_factory=dict)  # BaseModels of the namespace
    cluster_base_models: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_syncs: dict[str, str] = field(default_factory=dict)  # Succeeded ModelSync name -> target URI
    training_outputs: dict[str, str] = field(default_factory=dict)  # Succeeded TrainingRun name -> output URI


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from, as the status reports it."""

    kind: str  # BaseModel | ClusterBaseModel | ModelSync | URI
    name: str  # the object's name or the URI
    uri: str = ""
    revision: str = ""
    node_label: str | None = None  # node-cached: the agent's label that must be Ready
    ref: ModelRef | None = None


QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[mkMGTPE])?$")
ENV_SOURCES = {"secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef"}


def check_env_and_resources(spec: dict[str, Any]) -> None:
    """What the API server would reject in the Deployment, said on the ModelServer instead."""
    for i, item in enumerate((spec.get("engine") or {}).get("env") or []):
        extra = set(item) - {"name", "value", "valueFrom"}
        source = item.get("valueFrom")
        if (
            extra
            or not isinstance(item.get("name"), str)
            or not item["name"]
            or ("value" in item and not isinstance(item["value"], str))
            or (source is not None and (not isinstance(source, dict) or len(source) != 1 or set(source) - ENV_SOURCES))
        ):
            raise Refusal(
                Problem(
                    "InvalidEnv",
                    f"engine.env[{i}] must be {{name, value}} or {{name, valueFrom: one of {', '.join(sorted(ENV_SOURCES))}}}",
                )
            )
    resources = spec.get("resources") or {}
    for part, values in resources.items():
        if part not in ("requests", "limits", "claims") or (part != "claims" and not isinstance(values, dict)):
            raise Refusal(Problem("InvalidResources", f"resources.{part} is not requests or limits"))
        for key, value in values.items() if isinstance(values, dict) else []:
            if not QUANTITY.match(str(value)):
                raise Refusal(
                    Problem(
                        "InvalidResources",
                        f"resources.{part}.{key}: {str(value)[:40]!r} is not a quantity (e.g. 4, 500m, 16Gi)",
                    )
                )


def _revision(uri: str) -> str:
    try:
        return parse_uri(uri).revision
    except (ModelferryError, ValueError):
        return ""


def _node_cached(ns: str, kind: str, name: str, ctx: ServingContext) -> tuple[ModelSource, dict[str, Any]]:
    objs = ctx.base_models if kind == "BaseModel" else ctx.cluster_base_models
    obj = objs.get(name)
    if obj is None:
        raise Refusal(Problem(f"{kind}NotFound", f"{kind} {name!r} does not exist", waiting=True))
    ref = ModelRef(kind, ns if kind == "BaseModel" else "", name)
    storage = (obj.get("spec") or {}).get("storage") or {}
    root = Path(ctx.models_root)
    try:
        rel = model_dir(root, ref, storage.get("path")).relative_to(root).as_posix()
    except OutsideNamespaceError as exc:  # the agent refuses to place it there, so no node will hold it
        message = f"BaseModel {name!r}: {exc.message}; serve it as a ClusterBaseModel or move it"
        raise Refusal(Problem("ModelPathOutsideNamespace", message)) from None
    except (ModelferryError, ValueError) as exc:
        raise Refusal(Problem("ModelPathInvalid", f"{kind} {name!r}: {exc}")) from None
    uri = str(storage.get("storageUri") or "")
    source = ModelSource(kind, name, uri, _revision(uri), label_key(ctx.label_prefix, ref), ref)
    volume = {"name": "model", "hostPath": {"path": os.path.join(ctx.models_root, rel), "type": "Directory"}}
    return source, volume


class Refusal(Exception):
    """Raised while resolving with the Problem that stops rendering (render turns it into its result)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def _pull_uri(uri: str, what: str) -> str:
    try:
        parsed = parse_uri(uri)
    except (ModelferryError, ValueError) as exc:
        raise Refusal(Problem("InvalidURI", f"{what} URI {uri[:200]!r}: {exc}")) from None
    if parsed.scheme == "file":
        raise Refusal(Problem("InvalidURI", f"{what} URI {uri[:200]!r} is a local path, which a pod cannot reach"))
    return uri


def resolve_model(ns: str, spec: ModelServerSpec, ctx: ServingContext) -> tuple[ModelSource, dict[str, Any] | None]:
    """The model's source, and the volume that holds it when no init container has to fill one."""
    model = spec.model
    if model.base_model:
        return _node_cached(ns, "BaseModel", model.base_model, ctx)
    if model.cluster_base_model:
        return _node_cached(ns, "ClusterBaseModel", model.cluster_base_model, ctx)
    if model.model_sync:
        name = model.model_sync
        target = ctx.model_syncs.get(name)
        if target is None:
            raise Refusal(Problem("ModelSyncNotReady", f"ModelSync {name!r} has not synced yet", waiting=True))
        return ModelSource("ModelSync", name, target, _revision(target)), None
    uri = _pull_uri(model.uri or "", "model")
    parsed = parse_uri(uri)
    if parsed.scheme == "pvc":
        if parsed.namespace not in ("", ns):
            raise Refusal(
                Problem("InvalidURI", f"claim {parsed.bucket!r} is in namespace {parsed.namespace!r}, not {ns!r}")
            )
        claim: dict[str, Any] = {"claimName": parsed.bucket, "readOnly": True}
        volume = {"name": "model", "persistentVolumeClaim": claim, "_subPath": parsed.prefix}
        return ModelSource("URI", uri, uri), volume
    return ModelSource("URI", uri, uri, parsed.revision), None


def resolve_adapter(spec: ModelServerSpec, ctx: ServingContext) -> tuple[str, str] | None:
    """(URI, served name) of the adapter, or None."""
    adapter = spec.adapter
    if adapter is None or not adapter.wire():
        return None
    if adapter.training_run:
        run = adapter.training_run
        out = ctx.training_outputs.get(run)
        if out is None:
            raise Refusal(Problem("AdapterNotReady", f"TrainingRun {run!r} has not succeeded yet", waiting=True))
        return out.rstrip("/") + "/adapter", adapter.name or run
    uri = _pull_uri(adapter.uri or "", "adapter")
    if parse_uri(uri).scheme == "pvc":
        raise Refusal(
            Problem("InvalidURI", "a pvc:// adapter is not supported; put it in a bucket or give its hf:// name")
        )
    return uri, adapter.name or "adapter"
