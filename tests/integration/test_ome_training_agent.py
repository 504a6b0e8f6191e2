"""OME-Agent's ``training-agent --config X --debug`` end to end against the Oracle stand-in (seed 000).

Real child processes: ``python -m modelferry training-agent`` stages the training data from Object
Storage, runs the trainer (the built-in one for ``runtime: cohere``, a script for
``cohere-commandr``), uploads the weights to ``fine-tuned-model-weights/<training_name>`` and the
metrics to ``model-training-metrics/<training_name>``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelferry.cli.training_agent import settings_from_ome
from modelferry.errors import UsageError
from modelferry.omeagent import cohere
from modelferry.omeagent.config import load_ome_config
from tests.integration.test_oracle import write_oci_config
from tests.servers.oracle import OracleServer

ROOT = Path(__file__).resolve().parents[2]
NS = "idqj093njucb"
DATA = b"".join(json.dumps({"prompt": f"q{i}: ", "completion": f"answer {i}"}).encode() + b"\n" for i in range(16))

# A seed-000 training-agent configuration (keys and nesting as in OME-Agent's table).
COHERE_LORA: dict[str, Any] = {
    "auth_type": "UserPrincipal",
    "profile": "DEFAULT",
    "runtime": "cohere",
    "training_name": "ft-cohere-1",
    "input_object_store": {"enable_obo_token": False},
    "training_data": {"bucket_name": "training-data", "namespace": NS, "object_name": "train.jsonl"},
    "model": {"namespace": NS},
    "training_metrics": {"namespace": NS},
    "cohere_ft": {
        "size": "small",
        "strategy": "lora",
        "train_epochs": 1,
        "learning_rate": 0.001,
        "train_batch_size": 4,
        "early_stopping_patience": 5,
        "early_stopping_threshold": 0.0,
        "log_train_status_every_steps": 1,
        "lora_config": {"rank": 4, "alpha": 8},
    },
}

COMMANDR_TRAINER = """
import json, os, pathlib, sys
out = pathlib.Path(os.environ["MODELFERRY_OUTPUT_DIR"])
seen = {k: v for k, v in os.environ.items() if k.startswith("OME_AGENT_")}
data = sorted(p.name for p in pathlib.Path(os.environ["MODELFERRY_DATA_DIR"]).rglob("*.jsonl"))
(out / "weights").mkdir(parents=True, exist_ok=True)
(out / "weights" / "adapter.bin").write_bytes(b"command-r weights")
(out / "seen.json").write_text(json.dumps({"env": seen, "data": data, "argv": sys.argv[1:]}))
with open(os.environ["MODELFERRY_METRICS_FILE"], "a") as fh:
    fh.write(json.dumps({"step": 1, "loss": 0.5}) + "\\n")
"""


def child_env(oracle: OracleServer, oci_config: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OME_AGENT_", "MLFLOW_"))}
    for side in ("SOURCE", "TARGET"):
        env[f"MODELFERRY_SIDECAR_{side}__OCI__ENDPOINT"] = oracle.endpoint
        env[f"MODELFERRY_SIDECAR_{side}__OCI__CONFIG_FILE"] = str(oci_config)
    env["PYTHONPATH"] = str(ROOT)
    env["HF_HOME"] = str(tmp_path / "hf")
    return env


def modelferry(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m modelferry ARGV`` as a real child process; it must succeed."""
    cmd = [sys.executable, "-m", "modelferry", *argv]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=cwd, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def oracle(tmp_path: Path) -> Iterator[tuple[OracleServer, Path]]:
    with OracleServer(namespace=NS) as server:
        for bucket in ("training-data", "fine-tuned-model-weights", "model-training-metrics"):
            server.create_bucket(bucket)
        server.put("training-data", "train.jsonl", DATA)
        yield server, write_oci_config(tmp_path)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="the built-in trainer needs the [train] extra")
    pytest.importorskip("peft", reason="the built-in trainer needs the [train] extra")
    directory = tmp_path_factory.mktemp("tiny") / "model"
    cmd = [sys.executable, "-m", "modelferry.sidecar.trainers.peft_lora", "--build-tiny-model", str(directory)]
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    return directory


def test_cohere_lora_seed_command_line_end_to_end(
    oracle: tuple[OracleServer, Path], tiny_model: Path, tmp_path: Path
) -> None:
    server, oci_config = oracle
    config = write_config(tmp_path / "config.yaml", {**COHERE_LORA, "model_directory": str(tiny_model)})
    # The seed's command line, verbatim after the program name.
    argv = ["training-agent", "--config", str(config), "--debug"]
    proc = modelferry([*argv, "--workspace", str(tmp_path / "ws")], child_env(server, oci_config, tmp_path), tmp_path)
    assert " DEBUG " in proc.stderr  # --debug reached the logging, not the trainer's command line
    weights = server.buckets["fine-tuned-model-weights"]
    assert "ft-cohere-1/adapter/adapter_config.json" in weights
    adapter = json.loads(weights["ft-cohere-1/adapter/adapter_config.json"].data)
    assert (adapter["r"], adapter["lora_alpha"]) == (4, 8)  # cohere_ft.lora_config.rank / alpha
    metrics = server.buckets["model-training-metrics"]
    lines = [json.loads(x) for x in metrics["ft-cohere-1/metrics.jsonl"].data.decode().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, len(lines) + 1))  # log_train_status_every_steps: 1
    assert ("GET", f"/n/{NS}/b/training-data/o/train.jsonl") in server.requests


def test_vanilla_trains_only_the_last_layers(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    data = tmp_path / "train.jsonl"
    data.write_bytes(DATA)
    hyper = cohere.trainer_hyperparameters(
        load(
            tmp_path,
            {**COHERE_LORA, "cohere_ft": {**COHERE_LORA["cohere_ft"], "strategy": "vanilla", "n_last_layers": 1}},
        ).cohere_ft
    )
    from modelferry.sidecar.trainer_command import runtime_command

    (tmp_path / "ws" / "data").mkdir(parents=True)
    (tmp_path / "ws" / "data" / "train.jsonl").write_bytes(DATA)
    (tmp_path / "ws" / "model").symlink_to(tiny_model)
    argv = runtime_command("peft-lora", tmp_path / "ws", tmp_path / "out", hyper)
    proc = subprocess.run(  # noqa: PLW1510 - the exit status is asserted
        argv, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = load_file(str(tiny_model / "model.safetensors"))
    after = load_file(str(tmp_path / "out" / "model" / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.layers.1.") for k in changed)  # the last of 2 layers only


def test_cohere_commandr_runs_the_given_trainer_with_every_key_and_the_obo_token(
    oracle: tuple[OracleServer, Path], tmp_path: Path
) -> None:
    server, oci_config = oracle
    trainer = tmp_path / "train_commandr.py"
    trainer.write_text(COMMANDR_TRAINER)
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    ft = {
        **COHERE_LORA["cohere_ft"],
        "name": "my-ft",
        "serving_strategy": "vanilla",
        "tensor_parallel_size": 2,
        "base_model": "command-r-plus",
    }
    data = {
        **COHERE_LORA,
        "runtime": "cohere-commandr",
        "training_name": "ft-commandr",
        "model_directory": str(base),
        "input_object_store": {"enable_obo_token": True, "obo_token": "obo-secret-token"},
        "cohere_ft": ft,
    }
    config = write_config(tmp_path / "config.yaml", data)
    argv = ["training-agent", "--config", str(config), "--debug", "--workspace", str(tmp_path / "ws")]
    trainer_argv = ["--", sys.executable, str(trainer), "--debug"]
    proc = modelferry([*argv, *trainer_argv], child_env(server, oci_config, tmp_path), tmp_path)
    seen = json.loads((tmp_path / "ws" / "output" / "seen.json").read_text())
    assert seen["argv"] == ["--debug"] and seen["data"] == ["train.jsonl"]
    env = seen["env"]
    for key, value in cohere.flat(load(tmp_path, data).cohere_ft).items():
        assert env["OME_AGENT_COHERE_FT_" + key.replace(".", "_").upper()] == str(value)
    assert env["OME_AGENT_COHERE_FT_LORA_CONFIG_RANK"] == "4" and env["OME_AGENT_RUNTIME"] == "cohere-commandr"
    assert server.get("fine-tuned-model-weights", "ft-commandr/weights/adapter.bin") == b"command-r weights"
    assert "ft-commandr/metrics.jsonl" in server.buckets["model-training-metrics"]
    # The on-behalf-of token went, signed, with the training data reads, and nowhere else.
    reads = [i for i, (m, p) in enumerate(server.requests) if p.startswith(f"/n/{NS}/b/training-data/") and m == "GET"]
    assert reads and all(server.obo_tokens[i] == "obo-secret-token" for i in reads)
    assert all("opc-obo-token" in server.signed_headers[i] for i in reads)
    writes = [i for i, (m, p) in enumerate(server.requests) if "fine-tuned-model-weights" in p]
    assert writes and not any(server.obo_tokens[i] for i in writes)
    assert "obo-secret-token" not in proc.stderr


# --- required keys (seed 000's "yes when" column) and clear errors -----------------------------------


def load(tmp_path: Path, data: dict[str, Any]) -> Any:
    path = write_config(tmp_path / "c.yaml", data)
    config, _ = load_ome_config(path, "training-agent", environ={})
    return config


def without(ft: dict[str, Any], key: str) -> dict[str, Any]:
    if "." in key:
        head, tail = key.split(".")
        return {**ft, head: {k: v for k, v in ft[head].items() if k != tail}}
    return {k: v for k, v in ft.items() if k != key}


@pytest.mark.parametrize(
    ("runtime", "changes", "missing"),
    [
        ("cohere", {}, "size"),
        ("cohere", {}, "train_epochs"),
        ("cohere", {}, "early_stopping_threshold"),
        ("cohere", {}, "log_train_status_every_steps"),
        ("cohere", {}, "lora_config.rank"),
        ("cohere", {}, "lora_config.alpha"),
        ("cohere", {"strategy": "vanilla"}, "n_last_layers"),
        ("cohere-commandr", {"serving_strategy": "vanilla", "base_model": "r"}, "tensor_parallel_size"),
        ("cohere-commandr", {"serving_strategy": "lora"}, "base_model"),
        ("cohere-commandr", {"base_model": "r"}, "serving_strategy"),
    ],
)
def test_required_cohere_keys_are_named(tmp_path: Path, runtime: str, changes: dict[str, Any], missing: str) -> None:
    ft = without({**COHERE_LORA["cohere_ft"], **changes}, missing)
    config = load(tmp_path, {**COHERE_LORA, "runtime": runtime, "model_directory": "/m", "cohere_ft": ft})
    with pytest.raises(UsageError, match=f"cohere_ft.{missing}") as info:
        settings_from_ome(config, has_command=True)
    assert "OME_AGENT_COHERE_FT_" + missing.replace(".", "_").upper() in (info.value.hint or "")


def test_not_required_when_the_condition_does_not_hold(tmp_path: Path) -> None:
    # log_train_status_every_steps is required for cohere only; n_last_layers for vanilla only.
    ft = {**without(COHERE_LORA["cohere_ft"], "log_train_status_every_steps"), "serving_strategy": "lora"}
    config = load(
        tmp_path,
        {**COHERE_LORA, "runtime": "cohere-commandr", "model_directory": "/m", "cohere_ft": {**ft, "base_model": "r"}},
    )
    fields = settings_from_ome(config, has_command=True)
    assert fields["runtime"] is None and fields["trainer_env"]["OME_AGENT_COHERE_FT_BASE_MODEL"] == "r"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        (
            {
                "runtime": "cohere-commandr",
                "cohere_ft": {**COHERE_LORA["cohere_ft"], "serving_strategy": "lora", "base_model": "r"},
            },
            "no trainer command",
        ),
        ({"cohere_ft": {**COHERE_LORA["cohere_ft"], "strategy": "prefix"}}, "not supported by the built-in"),
        ({"input_object_store": {"enable_obo_token": True}}, "input_object_store.obo_token"),
        ({"input_object_store": {}}, "input_object_store.obo_token"),  # OME's default: enabled
    ],
)
def test_clear_errors(tmp_path: Path, changes: dict[str, Any], words: str) -> None:
    config = load(tmp_path, {**COHERE_LORA, "model_directory": "/m", **changes})
    with pytest.raises(UsageError, match=words):
        settings_from_ome(config, has_command=False)


def test_cohere_lora_maps_every_key_to_the_trainer(tmp_path: Path) -> None:
    fields = settings_from_ome(load(tmp_path, {**COHERE_LORA, "model_directory": "/m"}), has_command=False)
    assert fields["runtime"] == "peft-lora"
    assert fields["hyperparameters"] == {
        "num_train_epochs": 1,
        "learning_rate": 0.001,
        "train_batch_size": 4,
        "early_stopping_patience": 5,
        "early_stopping_threshold": 0.0,
        "log_model_metrics_interval_in_steps": 1,
        "strategy": "lora",
        "lora_r": 4,
        "lora_alpha": 8.0,
    }
    env = fields["trainer_env"]
    assert env["OME_AGENT_COHERE_FT_SIZE"] == "small" and env["OME_AGENT_COHERE_FT_NAME"] == "ft-cohere-1"
    from modelferry.sidecar.trainer_command import PEFT_LORA_FLAGS

    assert all(k in PEFT_LORA_FLAGS for k in fields["hyperparameters"])
