"""Pydantic's JSON schema turned into a structural Kubernetes schema (what a CRD's openAPIV3Schema must be).

$refs are inlined (a field's own description wins over its class's), ``Optional`` loses its
``anyOf: [X, null]``, ``int | str`` becomes ``x-kubernetes-int-or-string``, ``additionalProperties: true``
(an open object) becomes ``x-kubernetes-preserve-unknown-fields``, and titles and ``default: null`` go.
"""

from __future__ import annotations

from typing import Any

from modelferry.controller.api.meta import ApiModel

INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
ORDER = (
    "type",
    "description",
    "default",
    "format",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "maxItems",
    "anyOf",
    "x-kubernetes-int-or-string",
    "required",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "properties",
    "additionalProperties",
    "items",
)


def structural(model: type[ApiModel]) -> dict[str, Any]:
    """The structural schema of ``model`` (camelCase field names, every $ref inlined)."""
    schema = model.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})
    result: dict[str, Any] = _walk(schema, defs)
    return result


def _walk(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_walk(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o != {"type": "null"}]
        if len(options) == 1:
            inner = options[0]
            node = {**_walk(inner, defs), **node}
            return _walk(node, defs) if "$ref" in node or "anyOf" in node else _finish(node, defs)
        node["anyOf"] = options
    return _finish(node, defs)


def _finish(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node.pop("title", None)
    if node.get("default", 0) is None:
        del node["default"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("additionalProperties") is True:
        del node["additionalProperties"]
        node["x-kubernetes-preserve-unknown-fields"] = True
    if "anyOf" in node:
        options = _walk(node["anyOf"], defs)
        if options == INT_OR_STRING:
            node["anyOf"] = INT_OR_STRING
            node["x-kubernetes-int-or-string"] = True
        else:
            raise ValueError(f"a CRD schema cannot say anyOf {options}; use one type")
    if "properties" in node:
        node["properties"] = {name: _walk(sub, defs) for name, sub in node["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _walk(node[key], defs)
    unknown = set(node) - set(ORDER)
    if unknown:
        raise ValueError(f"unexpected schema keywords {sorted(unknown)} in {node}")
    return {key: node[key] for key in ORDER if key in node}
