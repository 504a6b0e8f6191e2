"""docs/reference/crds.md: every field of the custom resources, from the typed API (controller/api/).

The page reads the CRDs as ``tools.crds`` generates them from the models, the same documents that
``manifests/crds/`` holds (a test fails when those drift).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelferry.controller.api.v1alpha1 import KINDS
from tools.crds import CRDS, crd
from tools.refdocs.tables import code, page, table


def crd_files() -> list[Path]:
    """The CRD files in the order kustomize applies them (the order of the typed API's KINDS)."""
    listed = yaml.safe_load((CRDS / "kustomization.yaml").read_text())["resources"]
    return [CRDS / name for name in listed]


def type_text(schema: dict[str, Any]) -> str:
    kind = str(schema.get("type", "object" if "properties" in schema else "any"))
    if kind == "array":
        return f"[]{type_text(schema.get('items') or {})}"
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    if kind == "object" and "additionalProperties" in schema and "properties" not in schema:
        inner = schema["additionalProperties"]
        return f"map[string]{type_text(inner) if isinstance(inner, dict) else 'any'}"
    return kind


def rules(schema: dict[str, Any]) -> str:
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(code(v) for v in schema["enum"]))
    if "default" in schema:
        parts.append(f"default {code(schema['default'])}")
    for key, mark in (("minimum", ">="), ("maximum", "<="), ("minLength", "length >="), ("maxLength", "length <=")):
        if key in schema:
            parts.append(f"{mark} {schema[key]}")
    if "pattern" in schema:
        parts.append(f"pattern {code(schema['pattern'])}")
    for rule in schema.get("x-kubernetes-validations") or []:
        parts.append(str(rule.get("message") or rule.get("rule")))
    return "; ".join(parts)


def fields(schema: dict[str, Any], path: str, required: bool) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        (code(path), type_text(schema), "yes" if required else "", rules(schema), str(schema.get("description", "")))
    ]
    node = schema.get("items") if schema.get("type") == "array" else schema
    suffix = "[]" if schema.get("type") == "array" else ""
    needed = set((node or {}).get("required") or [])
    for name, child in ((node or {}).get("properties") or {}).items():
        rows += fields(child, f"{path}{suffix}.{name}", name in needed)
    return rows


def render_crd(doc: dict[str, Any]) -> list[str]:
    spec = doc["spec"]
    names = spec["names"]
    lines = [f"## {names['kind']}", ""]
    short = ", ".join(code(s) for s in names.get("shortNames") or [])
    lines += [
        f"`{spec['group']}`, {spec['scope'].lower()}, plural {code(names['plural'])}"
        + (f", short names {short}" if short else "")
        + f" (`{doc['metadata']['name']}`).",
        "",
    ]
    for version in spec["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        lines += [f"### {names['kind']} {version['name']}", ""]
        if schema.get("description"):
            lines += [schema["description"], ""]
        rows: list[tuple[str, ...]] = []
        needed = set(schema.get("required") or [])
        for top in ("spec", "status"):
            if top in (schema.get("properties") or {}):
                rows += fields(schema["properties"][top], top, top in needed)
        lines += table(["field", "type", "required", "rules", "meaning"], rows)
        columns = version.get("additionalPrinterColumns") or []
        if columns:
            lines += [
                "`kubectl get` columns: " + ", ".join(f"{c['name']} ({code(c['jsonPath'])})" for c in columns),
                "",
            ]
    return lines


def render() -> str:
    body: list[str] = []
    for kind in KINDS:  # the order of manifests/crds/kustomization.yaml
        body += render_crd(crd(kind))
    intro = (
        "Every field of the custom resources, from the typed API in `controller/api/` (the models that "
        "generate the CRDs in `manifests/crds/`, what `kubectl apply` installs). Field meanings and examples: [controller](../controller.md) (ModelSync), "
        "[node agent](../agent.md) (BaseModel, ClusterBaseModel), [training](../training.md) (TrainingRun)."
    )
    return page("Custom resources reference", intro, body)
