"""The models root: where each model lives, its markers, the staging swap, the high-watermark decision, and what to clean up."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelferry.controller.agent.tasks import ModelRef
from modelferry.errors import InsufficientSpaceError, PathInUseError, UnsafePathError
from modelferry.storage.base import MANIFEST_DIR, MANIFEST_NAME
from modelferry.uri import safe_relpath

AGENT_MARKER = ".modelferry/agent.json"  # which model a directory holds, written just before the swap
STAGING_SUFFIX = ".modelferry-new"
OLD_SUFFIX = ".modelferry-old"


def model_relpath(ref: ModelRef, path: str | None) -> str:
    """``spec.storage.path`` (relative to the root) or ``namespace/name`` (``_cluster/name`` for cluster models)."""
    if path:
        rel = path.strip()
        return safe_relpath(rel.lstrip("/"), obj=str(ref)) if rel else rel
    return f"_cluster/{ref.name}" if ref.cluster_scoped else f"{ref.namespace}/{ref.name}"


class OutsideNamespaceError(UnsafePathError):
    """A BaseModel's ``spec.storage.path`` that leaves its namespace's part of the models root."""


def _refuse(
    ref: ModelRef, path: str | None, why: str, hint: str, error: type[UnsafePathError] = UnsafePathError
) -> UnsafePathError:
    return error(f"{ref}: spec.storage.path {path!r} {why}", obj=str(ref), hint=hint)


def model_dir(root: Path, ref: ModelRef, path: str | None) -> Path:
    """The model's directory: below the models root; a namespaced model's below ``<root>/<namespace>/``.

    A BaseModel may not name ``_cluster/...`` (ClusterBaseModels), another namespace, the
    namespace directory itself, or a name ending in the agent's own staging suffixes.
    """
    if path and path.strip().startswith("/"):
        absolute = Path(os.path.normpath(path.strip()))
        if absolute == root or root not in absolute.parents:
            raise _refuse(
                ref,
                path,
                f"is outside the models root {root}",
                "Use a path relative to the models root, or one below it",
            )
        final = absolute
    else:
        final = root / model_relpath(ref, path)
    if final.name.endswith((STAGING_SUFFIX, OLD_SUFFIX)):
        raise _refuse(ref, path, "ends in a name the agent keeps for itself", "Choose another directory name")
    if not ref.cluster_scoped:
        home = root / ref.namespace
        if home not in final.parents:
            raise _refuse(
                ref,
                path,
                f"is outside this namespace's part of the models root ({home}/)",
                f"A BaseModel in namespace {ref.namespace!r} lives under {ref.namespace}/ of the models root; "
                "use a ClusterBaseModel for shared models",
                OutsideNamespaceError,
            )
    return final


def marker_owner(marker: dict[str, object]) -> ModelRef | None:
    """The model an agent marker names (None when it names none)."""
    kind, name = marker.get("kind"), marker.get("name")
    if not isinstance(kind, str) or not isinstance(name, str):
        return None
    namespace = marker.get("namespace")
    return ModelRef(kind, namespace if isinstance(namespace, str) else "", name)


def check_owner(ref: ModelRef, marker: dict[str, object] | None, directory: Path) -> None:
    """Refuse to replace or delete ``directory`` when its marker names another model."""
    owner = marker_owner(marker) if marker else None
    if owner is not None and owner != ref:
        raise PathInUseError(
            f"{ref}: {directory} holds {owner}; the agent does not replace or delete another model's copy",
            obj=str(ref),
            hint="Give this model its own spec.storage.path (or none: the default is namespace/name)",
        )


@dataclass(frozen=True)
class DiskUsage:
    total: int
    used: int
    free: int

    @property
    def fraction(self) -> float:
        return self.used / self.total if self.total else 0.0


def disk_usage(root: Path) -> DiskUsage:
    usage = shutil.disk_usage(root)
    return DiskUsage(usage.total, usage.used, usage.free)


def check_watermark(usage: DiskUsage, incoming: int, high: float, *, what: str) -> None:
    """Refuse ``incoming`` bytes that would push the filesystem above ``high`` (a fraction)."""
    after = usage.used + incoming
    limit = int(usage.total * high)
    if after > limit:
        raise InsufficientSpaceError(
            f"{what} needs {incoming} bytes: the models filesystem would be {after / usage.total:.0%} full, "
            f"above the {high:.0%} high watermark ({usage.free} bytes free)",
            obj=what,
            hint="Free space (delete models this node no longer needs), use a larger disk, or raise "
            "MODELFERRY_AGENT__HIGH_WATERMARK",
        )


def is_complete(directory: Path) -> bool:
    """A model copy is complete only when our manifest, written last, is there."""
    return (directory / MANIFEST_NAME).is_file()


def stale_dirs(root: Path, wanted: set[Path]) -> list[Path]:
    """Model directories the agent wrote (they hold its marker) that no wanted model uses, plus leftovers."""
    out: list[Path] = []
    if not root.is_dir():
        return out
    for manifest in root.glob("**/" + AGENT_MARKER):
        directory = manifest.parent.parent
        if directory.name.endswith(STAGING_SUFFIX):
            directory_base = directory.with_name(directory.name[: -len(STAGING_SUFFIX)])
            if directory_base in wanted:
                continue  # a download of a wanted model, about to be swapped in
        if directory in wanted or any(w in directory.parents for w in wanted):
            continue
        out.append(directory)
    for leftover in list(root.glob("**/*" + OLD_SUFFIX)):
        if leftover.is_dir():
            out.append(leftover)
    for staging in list(root.glob("**/*" + STAGING_SUFFIX)):
        # An interrupted download of a model nobody wants any more (wanted ones resume from it).
        if staging.is_dir() and staging.with_name(staging.name[: -len(STAGING_SUFFIX)]) not in wanted:
            out.append(staging)
    return sorted(set(out))


@dataclass
class Placement:
    final: Path
    staging: Path
    old: Path


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The agent marker of a complete copy, or None."""
    if not is_complete(directory):
        return None
    return read_any_marker(directory)


def read_any_marker(directory: Path) -> dict[str, Any] | None:
    """The agent marker in ``directory``, complete copy or not (who the directory belongs to)."""
    try:
        body = json.loads((directory / AGENT_MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return body if isinstance(body, dict) else None


def seed_with_links(old: Path, staging: Path) -> None:
    """Hard-link the current copy into staging (same filesystem): unchanged files are then skipped."""
    for src in old.rglob("*"):
        rel = src.relative_to(old)
        if rel.parts and rel.parts[0] == MANIFEST_DIR and rel.as_posix() != f"{MANIFEST_DIR}/manifest.json":
            continue
        target_path = staging / rel
        if src.is_dir():
            target_path.mkdir(parents=True, exist_ok=True)
        elif not target_path.exists():
            target_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, target_path)
            except OSError:
                return  # no hard links here: the engine simply downloads everything


def swap_in(place: Placement) -> None:
    """Staging becomes the model; the previous copy is removed after the swap."""
    if place.final.exists():
        if place.old.exists():
            shutil.rmtree(place.old)
        os.rename(place.final, place.old)
        os.rename(place.staging, place.final)
        shutil.rmtree(place.old, ignore_errors=True)
    else:
        place.final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(place.staging, place.final)
