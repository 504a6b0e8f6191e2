"""The committed CRDs are the ones the typed API generates, and the generated schemas stay structural."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelferry.controller.api.meta import ApiModel, prop
from modelferry.controller.api.v1alpha1 import KINDS
from tools.crds import CRDS, check, drift, files
from tools.crds.schema import structural

pytestmark = pytest.mark.unit


def test_committed_crds_are_generated() -> None:
    assert drift() == "", "manifests/crds/ differs from the typed API: run python -m tools.crds"


def test_check_fails_and_prints_the_diff_on_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in files():
        shutil.copy(path, tmp_path / path.name)
    assert check(tmp_path) == 0
    edited = tmp_path / "modelsync.yaml"
    edited.write_text(edited.read_text().replace("minLength: 1", "minLength: 0", 1))
    assert check(tmp_path) == 1
    out = capsys.readouterr().out
    assert "--- a/manifests/crds/modelsync.yaml" in out
    assert "-                    minLength: 0" in out and "+                    minLength: 1" in out
    (tmp_path / "nodeagent.yaml").unlink()
    assert check(tmp_path) == 1
    assert "+kind: CustomResourceDefinition" in capsys.readouterr().out


def test_every_kind_has_a_file_in_the_kustomization() -> None:
    listed = yaml.safe_load((CRDS / "kustomization.yaml").read_text())["resources"]
    assert listed == [path.name for path in files()]  # the reference page follows this order
    assert len(KINDS) == len(listed)


def _walk(schema: dict[str, Any], path: str) -> list[str]:
    """Every property without a description, and every keyword a structural schema forbids."""
    problems = [f"{path}: {key}" for key in ("$ref", "$defs", "title", "oneOf", "allOf", "not") if key in schema]
    if "anyOf" in schema and not schema.get("x-kubernetes-int-or-string"):
        problems.append(f"{path}: anyOf")
    if path.count(".") > 1 and "description" not in schema and not path.endswith("[]"):
        problems.append(f"{path}: no description")
    if "type" not in schema and not schema.get("x-kubernetes-int-or-string"):
        problems.append(f"{path}: no type")
    for name, sub in (schema.get("properties") or {}).items():
        problems += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        problems += _walk(schema["items"], f"{path}[]")
    return problems


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural_and_every_field_is_described(kind: Any) -> None:
    for part in ("spec", "status"):
        model = kind.spec if part == "spec" else kind.status
        assert _walk(structural(model), f".{part}") == []


def test_metadata_is_a_bare_object() -> None:
    """The API server refuses a CRD whose metadata schema says anything but ``type: object`` (even a description)."""
    for path in files():
        crd = yaml.safe_load(path.read_text())
        assert crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["metadata"] == {"type": "object"}


def test_optional_fields_lose_null_and_int_or_string_is_marked() -> None:
    class Sample(ApiModel):
        size: int | str | None = prop("A size.")
        name: str | None = prop("A name.", pattern="^a")

    schema = structural(Sample)
    assert schema["properties"]["name"] == {"type": "string", "description": "A name.", "pattern": "^a"}
    assert schema["properties"]["size"]["x-kubernetes-int-or-string"] is True
    assert "default" not in schema["properties"]["size"]


def test_a_union_the_api_server_cannot_express_is_refused() -> None:
    class Sample(ApiModel):
        value: int | bool = prop("Either.")

    with pytest.raises(ValueError, match="anyOf"):
        structural(Sample)
