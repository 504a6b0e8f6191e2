"""The typed API: a spec of the wrong shape is one permanent, actionable error naming the object and field,
and the Python enums say what the CRDs say."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from modelferry.controller.agent.daemonset import render_daemonset
from modelferry.controller.api.meta import Condition, ConditionStatus, Phase
from modelferry.controller.api.v1alpha1 import KINDS, modelserver, modelsync, nodeagent, trainingrun
from modelferry.controller.config.controller import ControllerSettings
from modelferry.controller.serving.inputs import ServingContext
from modelferry.controller.serving.render import render as render_server
from modelferry.controller.sync.modelsync import plan_modelsync_job
from modelferry.controller.training.render import RenderContext
from modelferry.controller.training.render import render as render_training
from modelferry.errors import EXIT_PERMANENT, InvalidSpecError
from tools.crds import CRDS

pytestmark = pytest.mark.unit


def obj(kind: str, spec: dict[str, Any], namespace: str | None = "team-a") -> dict[str, Any]:
    meta = {"name": "x", "uid": "u-1", **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "modelferry.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def test_a_wrong_type_names_the_object_the_field_and_the_value() -> None:
    bad = obj(
        "ModelSync", {"source": {"uri": "hf://o/r"}, "target": {"uri": "s3://b/p"}, "transfer": {"concurrency": "many"}}
    )
    with pytest.raises(InvalidSpecError) as caught:
        modelsync.parse_spec(bad)
    error = caught.value
    assert error.reason == "InvalidSpec" and error.exit_code == EXIT_PERMANENT and not error.retryable
    assert "spec.transfer.concurrency" in str(error) and "'many'" in str(error)
    assert "ModelSync team-a/x" in str(error) and "Fix the field" in str(error)


def test_a_missing_required_field_is_said_so_and_a_long_value_is_cut() -> None:
    with pytest.raises(InvalidSpecError, match=r"spec\.source\.uri is required"):
        modelsync.parse_spec(obj("ModelSync", {"source": {}, "target": {"uri": "s3://b/p"}}))
    with pytest.raises(InvalidSpecError) as caught:
        nodeagent.parse_spec(obj("NodeAgent", {"workers": ["x" * 500]}, namespace=None))
    assert "NodeAgent x" in str(caught.value) and len(str(caught.value)) < 300


def test_modelsync_of_the_wrong_shape_gets_ready_false_and_no_job() -> None:
    bad = obj("ModelSync", {"source": {"uri": "hf://o/r"}, "target": {"uri": "s3://b/p"}, "job": {"backoffLimit": "x"}})
    plan = plan_modelsync_job(bad, {}, ControllerSettings())
    assert plan.job is None and plan.error is not None
    assert plan.error.reason == "InvalidSpec" and "spec.job.backoffLimit" in plan.error.message


def test_trainingrun_of_the_wrong_shape_renders_nothing() -> None:
    spec = {"baseModel": {"uri": "s3://m/l"}, "dataset": {"uri": "s3://d/t"}, "trainer": {"runtime": "peft-lora"},
            "output": {"uri": "s3://o/r"}, "distributed": {"workers": "two"}}  # fmt: skip
    result = render_training(obj("TrainingRun", spec), RenderContext())
    assert result.objects == [] and result.problem is not None
    assert result.problem.reason == "InvalidSpec" and "spec.distributed.workers" in result.problem.message


def test_modelserver_of_the_wrong_shape_renders_nothing() -> None:
    spec = {"model": {"uri": "hf://o/r"}, "engine": {"type": "vllm"}, "replicas": "lots"}
    result = render_server(obj("ModelServer", spec), ServingContext())
    assert result.objects == [] and result.problem is not None
    assert result.problem.reason == "InvalidSpec" and "spec.replicas" in result.problem.message


@pytest.mark.parametrize(("written", "env"), [(None, "0.9"), (1, "1"), (0.85, "0.85"), (0.5, "0.5")])
def test_nodeagent_high_watermark_reaches_the_agent_as_written(written: float | None, env: str) -> None:
    spec = {} if written is None else {"highWatermark": written}
    ds = render_daemonset(obj("NodeAgent", spec, namespace=None), namespace="modelferry", default_image="img:1")
    assert isinstance(ds, dict)
    values = {e["name"]: e.get("value") for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert values["MODELFERRY_AGENT__HIGH_WATERMARK"] == env


def _schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"{kind.lower()}.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_python_enums_are_the_crd_enums() -> None:
    ms = _schema("ModelServer")["properties"]
    assert ms["spec"]["properties"]["engine"]["properties"]["type"]["enum"] == list(modelserver.EngineType)
    assert ms["status"]["properties"]["phase"]["enum"] == list(modelserver.ServerPhase)
    tr = _schema("TrainingRun")["properties"]
    assert tr["spec"]["properties"]["trainer"]["properties"]["runtime"]["enum"] == list(trainingrun.Runtime)
    assert tr["status"]["properties"]["phase"]["enum"] == list(Phase)
    condition = _schema("ModelSync")["properties"]["status"]["properties"]["conditions"]["items"]
    assert condition["properties"]["status"]["enum"] == list(ConditionStatus)
    assert set(condition["required"]) == {"type", "status"}


def test_conditions_round_trip_in_wire_form() -> None:
    wire = {"type": "Synced", "status": "True", "reason": "SyncSucceeded", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    condition = Condition.model_validate(wire)
    assert condition.type == modelsync.ConditionType.SYNCED and condition.status is ConditionStatus.TRUE
    assert condition.wire() == wire


def test_every_kind_is_served_once_per_name() -> None:
    assert len({k.crd_name for k in KINDS}) == len(KINDS)
    assert {k.kind for k in KINDS} == {
        "ModelSync",
        "BaseModel",
        "ClusterBaseModel",
        "TrainingRun",
        "ModelServer",
        "NodeAgent",
    }
