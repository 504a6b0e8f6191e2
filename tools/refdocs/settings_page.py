"""docs/reference/settings.md: every pydantic-settings model, one row per environment variable."""

from __future__ import annotations

import enum
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from tools.refdocs.tables import code, page, table

# (module, class, the command that reads it); a subclass of an earlier model lists only its own fields.
MODELS: list[tuple[str, str, str]] = [
    ("modelferry.settings", "SyncSettings", "`sync`, `inspect`, `upload`, `hf-download`, `replica`"),
    ("modelferry.controller.agent.settings", "AgentSettings", "`agent`"),
    ("modelferry.controller.config.controller", "ControllerSettings", "`controller`"),
    ("modelferry.sidecar.settings", "SidecarSettings", "`sidecar`, `training-agent`"),
    ("modelferry.enigma.settings", "EnigmaSettings", "`enigma`, `sync --decrypt`, the agent's decryption"),
]
MiB = 1 << 20


def load(module: str, name: str) -> type[BaseSettings]:
    import importlib

    model = getattr(importlib.import_module(module), name)
    if not (isinstance(model, type) and issubclass(model, BaseSettings)):
        raise TypeError(f"{module}.{name} is not a pydantic-settings model")
    return model


def type_name(annotation: Any) -> str:
    """``str | None``, ``list[str]``, ``Literal['a', 'b']`` without module paths."""
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return " | ".join(type_name(arg) for arg in typing.get_args(annotation))
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(arg) for arg in typing.get_args(annotation))
    return re.sub(r"\b(?:typing|pathlib|pydantic(?:\.types)?)\.", "", str(annotation))


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
        return "unset"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and value >= MiB and value % MiB == 0:
        return f"{value} ({value // MiB} MiB)"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | dict | tuple):
        return repr(value)
    return str(value)


def bounds(info: FieldInfo) -> str:
    marks = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = []
    for meta in info.metadata:
        for attr, mark in marks.items():
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{mark} {value}")
    return ", ".join(parts)


def nested(info: FieldInfo) -> type[BaseModel] | None:
    ann = info.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def rows(model: type[BaseModel], prefix: str, skip: set[str]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        variable = prefix + name.upper()
        inner = nested(info)
        if inner is not None:
            out += rows(inner, variable + "__", set())
            continue
        description = info.description or ""
        out.append((code(variable), code(type_name(info.annotation)), default_text(info), bounds(info), description))
    return out


def render() -> str:
    body: list[str] = []
    documented: list[type[BaseSettings]] = []
    for module, name, readers in MODELS:
        model = load(module, name)
        parent = next((d for d in documented if issubclass(model, d)), None)
        skip = set(parent.model_fields) if parent else set()
        prefix = str(model.model_config.get("env_prefix", ""))
        delimiter = model.model_config.get("env_nested_delimiter")
        assert delimiter == "__", f"{name} must nest with __"
        body += [f"## {name}", "", f"`{module}.{name}`, read by {readers}. {(model.__doc__ or '').strip()}", ""]
        if parent:
            body += [f"Every variable of [{parent.__name__}](#{parent.__name__.lower()}) too, and:", ""]
        body += table(["variable", "type", "default", "bounds", "meaning"], rows(model, prefix, skip))
        documented.append(model)
    intro = (
        "Every setting of every component, from its pydantic-settings model. Each is an environment variable "
        "(nested blocks joined with `__`); command-line options, where a command has one, win over the "
        "environment. Lists and maps are JSON, e.g. `MODELFERRY_CONTROLLER__NAMESPACES='[\"demo\"]'`. "
        "Credentials for the two sides of a copy exist twice, under `SOURCE__` and `TARGET__`. "
        "An unknown `MODELFERRY_*` variable is reported with a warning."
    )
    return page("Settings reference", intro, body)
