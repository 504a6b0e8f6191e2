"""``modelferry demo`` end to end: moto S3 + a real MLflow server + the real tiny peft-lora trainer.

This is also the full local run of the sidecar: the metrics in MLflow must equal the metrics file
step for step, and the adapter and its manifest must be in the bucket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from click.testing import CliRunner

from modelferry.cli import demo
from tests.servers.training import metric_history


@pytest.mark.slow
def test_demo_full_run_metrics_match_and_adapter_is_uploaded(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def inspect(summary: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        run_id = summary["mlflow_run_id"]
        seen["loss"] = metric_history(summary["mlflow_url"], run_id, "loss")
        seen["eval_loss"] = metric_history(summary["mlflow_url"], run_id, "eval_loss")
        run = MlflowClient(summary["mlflow_url"]).get_run(run_id)
        seen["params"], seen["tags"], seen["status"] = run.data.params, run.data.tags, run.info.status
        s3 = boto3.client(
            "s3",
            endpoint_url=summary["s3_endpoint"],
            region_name="us-east-1",
            aws_access_key_id=demo.ACCESS_KEY,
            aws_secret_access_key=demo.SECRET_KEY,
        )
        key = summary["output_uri"].removeprefix(f"s3://{demo.BUCKET}/") + "/.modelferry/manifest.json"
        seen["manifest"] = json.loads(s3.get_object(Bucket=demo.BUCKET, Key=key)["Body"].read())
        seen["models"] = httpx.get(summary["serve_url"] + "/models", timeout=30).json()["data"]

    summary = demo.run_demo(tmp_path, keep=False, epochs=1, echo=lambda _m: None, inspect=inspect)
    lines = [json.loads(x) for x in (tmp_path / "workspace" / "output" / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == len(lines) == 4
    assert seen["loss"] == [(r["step"], pytest.approx(r["loss"])) for r in lines]
    assert seen["eval_loss"] == [(r["step"], pytest.approx(r["eval_loss"])) for r in lines]
    assert seen["params"]["learning_rate"] == "0.01"
    assert seen["tags"]["modelferry.output_uri"] == summary["output_uri"]
    assert seen["status"] == "FINISHED"
    assert "adapter/adapter_model.safetensors" in summary["objects"]
    assert {"metrics.jsonl", "metrics_summary.json", "trainer.log"} <= set(summary["objects"])
    assert {f["path"] for f in seen["manifest"]["files"]} >= {"adapter/adapter_model.safetensors", "metrics.jsonl"}
    assert summary["mlflow_delivery"]["buffered"] == 0
    # served: the adapter on the synced base model, asked one chat question over HTTP
    assert [m["id"] for m in seen["models"]] == ["tiny-llama", demo.ADAPTER_NAME]
    assert summary["served_models"] == ["tiny-llama", demo.ADAPTER_NAME]
    assert isinstance(summary["answer"], str) and summary["question"] == demo.QUESTION
    assert (tmp_path / "serve" / demo.ADAPTER_NAME / "adapter_config.json").is_file()
    with pytest.raises(httpx.ConnectError):  # the model server stopped with the demo
        httpx.get(summary["serve_url"] + "/models", timeout=5)


def test_demo_names_the_missing_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "missing_packages", lambda: ["moto[server]", "train"])
    result = CliRunner().invoke(demo.demo_command, [])
    assert result.exit_code != 0
    assert "pip install 'modelferry[train]' moto[server]" in str(result.exception)
