"""What every kind shares: the model base, conditions, and the CRD facts that are not schema.

Parsing a spec checks its *shape* (types, nesting). Value bounds, patterns, enums and CEL rules are
declared here too but enforced by the API server through the generated CRD (they sit in the JSON
schema only): the controller's own checks then still speak, with their reasons, for objects that
reach it unchecked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from modelferry.errors import InvalidSpecError

GROUP = "modelferry.io"


class ApiModel(pydantic.BaseModel):
    """Base of every spec and status model: camelCase on the wire, snake_case in Python, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore", protected_namespaces=()
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it (camelCase, unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def wire_as_set(self) -> dict[str, Any]:
        """The fields set when the model was made, nulls included (in a merge patch a null removes the field)."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


M = TypeVar("M", bound=ApiModel)


class OpenModel(ApiModel):
    """An object that keeps fields it does not name (``x-kubernetes-preserve-unknown-fields``)."""

    model_config = ConfigDict(extra="allow")


def _extra(schema: dict[str, Any]) -> Any:
    """``json_schema_extra`` that merges an ``items`` entry into the items schema instead of replacing it."""
    if not schema:
        return None
    item_schema = schema.pop("items", None)

    def merge(out: dict[str, Any]) -> None:
        out.update(schema)
        if item_schema:
            out.setdefault("items", {}).update(item_schema)

    return merge


def prop(description: str, default: Any = None, **schema: Any) -> Any:
    """A field with its CRD description; ``schema`` adds keywords the API server enforces (minimum, pattern ...)."""
    return Field(default, description=description, json_schema_extra=_extra(schema))


def required(description: str, **schema: Any) -> Any:
    """A required field (``required`` in the CRD)."""
    return Field(..., description=description, json_schema_extra=_extra(schema))


def items(description: str, **schema: Any) -> Any:
    """A list field, empty by default; ``schema`` as for :func:`prop` (``items={...}`` for each item)."""
    return Field(default_factory=list, description=description, json_schema_extra=_extra(schema))


Int64 = Annotated[int, Field(json_schema_extra={"format": "int64"})]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
IntOrString = Annotated[int | str, Field(json_schema_extra={"x-kubernetes-int-or-string": True})]
Object = Annotated[dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]


class ConditionStatus(StrEnum):
    """A condition's status."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Phase(StrEnum):
    """The life of a run (ModelSync, TrainingRun)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Condition(ApiModel):
    """One observation of an object's state (the shape of metav1.Condition)."""

    type: str = required("The condition's type (each kind lists its own).")
    status: ConditionStatus = required("True, False or Unknown.")
    reason: str | None = prop("A CamelCase word a program may switch on.")
    message: str | None = prop("What happened, for a person.")
    last_transition_time: Timestamp | None = prop("When status last changed (RFC 3339).")
    observed_generation: Int64 | None = prop("The generation of the object this condition describes.")


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry (what ``kubectl get`` shows)."""

    name: str
    type: str
    json_path: str
    priority: int = 0


@dataclass(frozen=True)
class Kind:
    """A custom resource: its names and the CRD facts beside the schema."""

    kind: str
    plural: str
    version: str
    scope: str  # Namespaced | Cluster
    spec: type[ApiModel]
    status: type[ApiModel]
    description: str
    comment: str  # the header comment of the generated YAML
    component: str  # app.kubernetes.io/component
    short_names: tuple[str, ...] = ()
    columns: tuple[PrinterColumn, ...] = ()
    spec_required: bool = True
    validations: tuple[dict[str, str], ...] = ()  # CEL rules on the whole object
    scale: dict[str, str] | None = None  # the scale subresource's paths
    categories: tuple[str, ...] = ("modelferry",)
    group: str = GROUP

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"


def parse(model: type[M], obj: Mapping[str, Any]) -> M:
    """``obj``'s spec as ``model``; a spec of the wrong shape is a permanent error naming the object and field."""
    try:
        return model.model_validate(obj.get("spec") or {})
    except pydantic.ValidationError as exc:
        meta = obj.get("metadata") or {}
        where = "/".join(str(p) for p in (meta.get("namespace"), meta.get("name")) if p)
        problems = "; ".join(_problem(e) for e in exc.errors(include_url=False)[:5])
        raise InvalidSpecError(
            problems, obj=f"{obj.get('kind') or 'object'} {where}", hint="Fix the field(s) named above"
        ) from None


def _problem(error: Any) -> str:
    path = ".".join(["spec", *(str(p) for p in error["loc"])])
    if error["type"] == "missing":
        return f"{path} is required"
    return f"{path}: {error['msg']} (got {repr(error.get('input'))[:60]})"
