"""``training-agent``: OME-Agent keys -> sidecar settings, and the unsupported runtimes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from modelferry.cli.training_agent import settings_from_ome, training_agent_command
from modelferry.errors import UsageError
from modelferry.omeagent.config import load_ome_config

CONFIG = {
    "runtime": "peft",
    "training_name": "ft-1",
    "auth_type": "InstancePrincipal",
    "model_directory": "/mnt/models/llama",
    "input_object_store": {"enable_obo_token": False},
    "training_data": {"bucket_name": "data", "namespace": "ns1", "object_name": "train.jsonl"},
    "model": {"namespace": "ns1"},
    "training_metrics": {"namespace": "ns1"},
    "peft_ft": {
        "num_train_epochs": 2,
        "learning_rate": 0.0001,
        "train_batch_size": 4,
        "early_stopping_patience": 3,
        "early_stopping_threshold": 0.01,
        "log_model_metrics_interval_in_steps": 5,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.1,
    },
}


def load(tmp_path: Path, data: dict[str, object]) -> object:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    config, _ = load_ome_config(path, "training-agent", environ={})
    return config


def test_ome_keys_map_to_sidecar_settings(tmp_path: Path) -> None:
    fields = settings_from_ome(load(tmp_path, CONFIG), has_command=False)
    assert fields["runtime"] == "peft-lora"
    assert fields["base_model_uri"] == "/mnt/models/llama"
    assert fields["dataset_uri"] == "oci://n/ns1/b/data/o/train.jsonl"
    assert fields["output_uri"] == "oci://n/ns1/b/fine-tuned-model-weights/o/ft-1"
    assert fields["tags"]["ome.metrics_uri"] == "oci://n/ns1/b/model-training-metrics/o/ft-1"
    assert fields["source"]["oci"]["auth_type"] == "instance_principal"
    hyper = fields["hyperparameters"]
    assert hyper["num_train_epochs"] == 2
    assert hyper["log_model_metrics_interval_in_steps"] == 5
    assert hyper["peft_type"] == "lora"
    assert "model_name" not in hyper


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"runtime": "cohere"}, "cohere_ft.size"),
        ({"runtime": "cohere-commandr"}, "cohere_ft.size"),
        ({"runtime": "axolotl"}, "unknown training runtime"),
        ({"training_name": None}, "training_name"),
        ({"model_directory": None}, "base model"),
        ({"training_data": {"bucket_name": "data"}}, "training_data.namespace"),
        ({"auth_type": "Magic"}, "auth_type"),
    ],
)
def test_bad_configs_are_usage_errors(tmp_path: Path, change: dict[str, object], words: str) -> None:
    data = {**CONFIG, **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(UsageError, match=words):
        settings_from_ome(load(tmp_path, data), has_command=False)


def test_cli_names_the_missing_cohere_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("OME_AGENT_"):
            monkeypatch.delenv(name)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "runtime": "cohere"}))
    result = CliRunner().invoke(training_agent_command, ["--config", str(path)])
    assert isinstance(result.exception, UsageError)
    assert "needs cohere_ft.size" in str(result.exception)
