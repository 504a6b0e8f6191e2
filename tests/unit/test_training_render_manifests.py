"""The TrainingRun CRD and its examples: the examples validate and render without problems."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from modelferry.controller.training import RenderContext, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("trainingrun*.yaml"))


def schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "manifests" / "crds" / "trainingrun.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == "TrainingRun"
    [version] = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_renders(path: Path) -> None:
    tr = yaml.safe_load(path.read_text())
    jsonschema.validate(tr, schema())
    result = render(tr, RenderContext(model_syncs={"llama-3-8b": "s3://models/llama-3-8b"}))
    assert result.problem is None
    assert result.objects


def test_schema_rejects_a_bad_runtime_and_missing_output() -> None:
    tr = yaml.safe_load(EXAMPLES[0].read_text())
    tr["spec"]["trainer"]["runtime"] = "cohere"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(tr, schema())
    del tr["spec"]["output"]
    tr["spec"]["trainer"]["runtime"] = "peft-lora"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(tr, schema())
