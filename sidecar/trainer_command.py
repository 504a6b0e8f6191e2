"""Built-in runtimes: the trainer command for a runtime name and its hyperparameters (pure)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from modelferry.errors import UsageError

RUNTIMES = ("peft-lora",)

# hyperparameter (OME-Agent's peft_ft.* name, or the TrainingRun's camelCase one) -> trainer flag
PEFT_LORA_FLAGS: dict[str, str] = {
    "num_train_epochs": "--epochs",
    "epochs": "--epochs",
    "learning_rate": "--learning-rate",
    "learningRate": "--learning-rate",
    "train_batch_size": "--batch-size",
    "batchSize": "--batch-size",
    "early_stopping_patience": "--early-stopping-patience",
    "earlyStoppingPatience": "--early-stopping-patience",
    "early_stopping_threshold": "--early-stopping-threshold",
    "earlyStoppingThreshold": "--early-stopping-threshold",
    "log_model_metrics_interval_in_steps": "--logging-steps",
    "loggingSteps": "--logging-steps",
    "lora_r": "--lora-r",
    "loraR": "--lora-r",
    "lora_alpha": "--lora-alpha",
    "loraAlpha": "--lora-alpha",
    "lora_dropout": "--lora-dropout",
    "loraDropout": "--lora-dropout",
    "max_length": "--max-length",
    "maxLength": "--max-length",
    "checkpoint_steps": "--checkpoint-steps",
    "checkpointSteps": "--checkpoint-steps",
    "seed": "--seed",
    "strategy": "--strategy",
    "n_last_layers": "--n-last-layers",
    "nLastLayers": "--n-last-layers",
}
IGNORED = {"peft_type", "peftType", "model_name", "modelName", "train_dataset_file", "trainDatasetFile", "merge"}


def find_dataset(data_dir: Path, name: str | None = None) -> Path:
    """The training file: ``name`` under ``data_dir``, else the only data file there."""
    if name:
        path = data_dir / name
        if not path.is_file():
            raise UsageError(f"dataset file {name!r} is not in the staged data", obj=str(data_dir))
        return path
    files = sorted(
        p
        for p in data_dir.rglob("*")
        if p.is_file() and ".modelferry" not in p.parts and p.suffix in (".jsonl", ".json", ".txt")
    )
    if len(files) != 1:
        raise UsageError(
            f"expected one dataset file (.jsonl/.json/.txt) in {data_dir}, found {len(files)}",
            hint="Set hyperparameters.train_dataset_file to pick one",
        )
    return files[0]


def runtime_command(
    runtime: str, workspace: Path, output: Path, hyper: dict[str, Any], python: str = sys.executable
) -> list[str]:
    """The argv of a built-in runtime (run by ``python``: this interpreter locally, python3 in a pod)."""
    if runtime != "peft-lora":
        if runtime.startswith("cohere"):
            raise UsageError(
                f"runtime {runtime!r} (OME's proprietary Cohere trainer) is not supported",
                hint="Use runtime peft-lora or your own trainer image and command",
            )
        raise UsageError(f"unknown runtime {runtime!r}", hint=f"Known runtimes: {', '.join(RUNTIMES)}")
    peft_type = str(hyper.get("peft_type", hyper.get("peftType", "lora"))).lower()
    if peft_type != "lora" and str(hyper.get("strategy", "lora")).lower() == "lora":
        raise UsageError(f"peft_type {peft_type!r} is not supported by peft-lora", hint="Use peft_type: lora")
    dataset = find_dataset(workspace / "data", hyper.get("train_dataset_file") or hyper.get("trainDatasetFile"))
    argv = [
        python,
        "-m",
        "modelferry.sidecar.trainers.peft_lora",
        "--model",
        str(workspace / "model"),
        "--dataset",
        str(dataset),
        "--output",
        str(output),
    ]
    unknown = []
    for key, value in hyper.items():
        if key in PEFT_LORA_FLAGS:
            argv += [PEFT_LORA_FLAGS[key], str(value)]
        elif key not in IGNORED:
            unknown.append(key)
    if unknown:
        raise UsageError(
            f"unknown peft-lora hyperparameters: {', '.join(sorted(unknown))}",
            hint=f"Known: {', '.join(sorted(set(PEFT_LORA_FLAGS)))}",
        )
    if str(hyper.get("merge", "")).lower() in ("1", "true", "yes"):
        argv.append("--merge")
    return argv
