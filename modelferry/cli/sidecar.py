"""``modelferry sidecar run [--config f.yaml] [OPTIONS] -- CMD ...``: the training sidecar."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from modelferry.cli.dataplane import register_credentials, write_termination_message
from modelferry.errors import UsageError

log = logging.getLogger("modelferry.sidecar")


def load_config(path: str | None) -> dict[str, Any]:
    """A YAML (or JSON) mapping of SidecarSettings fields."""
    if not path:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise UsageError(f"cannot read the sidecar config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"the sidecar config {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"the sidecar config {path} must be a mapping of settings")
    return data


def parse_pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        out[key] = value
    return out


def build_sidecar_settings(config: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """Environment < config file < command line; validated once."""
    from modelferry.settings import warn_unknown_env
    from modelferry.sidecar.settings import SidecarSettings

    merged = dict(config)
    for dotted, value in overrides.items():
        if value is None or value == {}:
            continue
        node = merged
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(value, dict):
            node[leaf] = {**node.get(leaf, {}), **value}
        else:
            node[leaf] = value
    try:
        settings = SidecarSettings(**merged)
    except ValidationError as exc:
        raise UsageError(
            f"invalid sidecar settings: {exc}", hint="Check --config, MODELFERRY_SIDECAR_* and options"
        ) from exc
    warn_unknown_env(
        SidecarSettings,
        environ={k.replace("SIDECAR_", "", 1): v for k, v in os.environ.items() if k.startswith("MODELFERRY_SIDECAR_")},
    )
    register_credentials(settings.source)
    register_credentials(settings.target)
    return settings


@click.group("sidecar")
def sidecar_group() -> None:
    """The training sidecar: stage inputs, supervise the trainer, stream metrics, ship the result."""


@sidecar_group.command("run", context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_path", default=None, help="YAML file of sidecar settings.")
@click.option("--workspace", default=None, help="Workspace directory [./workspace].")
@click.option(
    "--mode", type=click.Choice(["local", "pod"]), default=None, help="local: trainer is a child; pod: a container."
)
@click.option("--runtime", default=None, help="Built-in trainer when no command is given (peft-lora).")
@click.option("--base-model", default=None, help="Base model URI, staged into WORKSPACE/model.")
@click.option("--dataset", default=None, help="Dataset URI (file or prefix), staged into WORKSPACE/data.")
@click.option("--output", default=None, help="Where WORKSPACE/output goes on success (failed/ below it otherwise).")
@click.option("--metrics-file", default=None, help="Metrics JSON lines, relative to the workspace.")
@click.option("--trainer-state", default=None, help="A trainer_state.json to follow, relative to the workspace.")
@click.option("--param", "params", multiple=True, help="Hyperparameter KEY=VALUE (repeatable), logged to MLflow.")
@click.option("--tag", "tags", multiple=True, help="MLflow tag KEY=VALUE (repeatable).")
@click.option("--mlflow-tracking-uri", default=None, help="MLflow server (env MLFLOW_TRACKING_URI).")
@click.option("--experiment", default=None, help="MLflow experiment (env MLFLOW_EXPERIMENT_NAME).")
@click.option("--stall-timeout", type=float, default=None, help="Seconds without progress before a stall; 0 off.")
@click.option("--stall-action", type=click.Choice(["fail", "warn"]), default=None, help="What a stall does [fail].")
@click.option("--timeout", type=float, default=None, help="Seconds the trainer may run; 0 off.")
@click.option("--early-stopping-metric", default=None, help="Metric to watch, lower is better [eval_loss].")
@click.option("--early-stopping-patience", type=int, default=None, help="Reports without improvement; 0 off.")
@click.option("--early-stopping-threshold", type=float, default=None, help="Smallest improvement that counts.")
@click.option("--source-endpoint", default=None, help="S3 endpoint for staging inputs.")
@click.option("--target-endpoint", default=None, help="S3 endpoint for the output.")
@click.option("--termination-log", default=None, help="Where to write the Kubernetes termination message.")
@click.option("--json", "json_output", is_flag=True, help="Print the result as JSON on stdout.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run_command(
    config_path: str | None,
    params: tuple[str, ...],
    tags: tuple[str, ...],
    json_output: bool,
    command: tuple[str, ...],
    **kw: Any,
) -> None:
    """Stage, run the trainer (the COMMAND after --, or a built-in --runtime), report and upload.

    \b
    Examples:
      modelferry sidecar run --output s3://bucket/runs/r1 -- python train.py --epochs 3
      modelferry sidecar run --runtime peft-lora --base-model s3://b/models/llama \\
          --dataset s3://b/data/train.jsonl --output s3://b/runs/r1 --param learning_rate=1e-4
      modelferry sidecar run --config sidecar.yaml --mode pod
    """
    from modelferry.sidecar.runner import run_training

    hyper: dict[str, Any] = parse_pairs(params, "--param")
    overrides: dict[str, Any] = {
        "workspace": kw["workspace"],
        "mode": kw["mode"],
        "runtime": kw["runtime"],
        "base_model_uri": kw["base_model"],
        "dataset_uri": kw["dataset"],
        "output_uri": kw["output"],
        "metrics_file": kw["metrics_file"],
        "trainer_state": kw["trainer_state"],
        "hyperparameters": hyper,
        "tags": parse_pairs(tags, "--tag"),
        "mlflow.tracking_uri": kw["mlflow_tracking_uri"],
        "mlflow.experiment_name": kw["experiment"],
        "lifecycle.stall_timeout": kw["stall_timeout"],
        "lifecycle.stall_action": kw["stall_action"],
        "lifecycle.timeout": kw["timeout"],
        "lifecycle.early_stopping_metric": kw["early_stopping_metric"],
        "lifecycle.early_stopping_patience": kw["early_stopping_patience"],
        "lifecycle.early_stopping_threshold": kw["early_stopping_threshold"],
        "source.s3.endpoint_url": kw["source_endpoint"],
        "target.s3.endpoint_url": kw["target_endpoint"],
        "termination_log": kw["termination_log"],
    }
    argv = list(command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    settings = build_sidecar_settings(load_config(config_path), overrides)
    if json_output:  # stdout carries only the JSON result; the trainer's output goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            result = run_training(settings, argv)
    else:
        result = run_training(settings, argv)
    payload = result.to_dict()
    write_termination_message(settings.termination_log, payload)
    if json_output:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    log.info("training %s: %s", result.phase, result.message)
    if result.exit_code:
        sys.exit(result.exit_code)
