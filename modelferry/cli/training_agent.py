"""``modelferry training-agent --config x.yaml``: OME-Agent's training sidecar, on modelferry's sidecar.

Reads ``training_name``, ``runtime``, ``model_directory``, ``input_object_store.*``,
``training_data.*``, ``model.*``, ``training_metrics.*``, ``cohere_ft.*`` and ``peft_ft.*`` (YAML or
``OME_AGENT_*``), and runs the built-in trainer (``peft``; ``cohere`` with strategy lora or vanilla)
or the command after ``--`` (any runtime; ``cohere-commandr`` needs one) with staging, MLflow
streaming and upload to Object Storage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from typing import Any

import click

from modelferry.errors import UsageError
from modelferry.omeagent import cohere

log = logging.getLogger("modelferry.training_agent")

PEFT_RUNTIMES = {"peft", "peft-lora", "peft_lora", "peft-ft", "peft_ft"}


def _oci(section: str, location: Any, default_object: str | None, default_bucket: str | None = None) -> str:
    obj = location.object_name or default_object
    bucket = location.bucket_name or default_bucket  # OME's defaults hold even when the section is partly set
    missing = [f"{section}.{k}" for k, v in (("bucket_name", bucket), ("namespace", location.namespace)) if not v]
    if not obj:
        missing.append(f"{section}.object_name")
    if missing:
        env = ", ".join("OME_AGENT_" + m.replace(".", "_").upper() for m in missing)
        raise UsageError(f"training-agent needs {', '.join(missing)}", hint=f"Set them in the config file or as {env}")
    return f"oci://n/{location.namespace}/b/{bucket}/o/{str(obj).strip('/')}"


def _obo_token(config: Any) -> str | None:
    """``input_object_store``: the on-behalf-of token for the input bucket, required when enabled (OME's table)."""
    store = config.input_object_store
    if not store.enable_obo_token:
        return None
    if store.obo_token is None or not store.obo_token.get_secret_value().strip():
        raise UsageError(
            "training-agent needs input_object_store.obo_token (input_object_store.enable_obo_token is true)",
            obj="input_object_store.obo_token",
            hint="Set it (OME_AGENT_INPUT_OBJECT_STORE_OBO_TOKEN), or set input_object_store.enable_obo_token: "
            "false to read the training data with auth_type alone",
        )
    return str(store.obo_token.get_secret_value().strip())


def _runtime(config: Any, *, has_command: bool, pod: bool) -> tuple[str | None, dict[str, Any], dict[str, str]]:
    """The built-in runtime (None: the user's trainer), its hyperparameters and extra trainer variables."""
    runtime = (config.runtime or "").strip().lower()
    name = config.training_name
    if runtime in cohere.COHERE_RUNTIMES:
        cohere.check(runtime, config.cohere_ft)
        env = {
            "OME_AGENT_TRAINING_NAME": name,
            "OME_AGENT_RUNTIME": runtime,
            **cohere.trainer_env(config.cohere_ft, name),
        }
        if runtime == "cohere-commandr":
            if not has_command and not pod:
                raise UsageError(
                    "runtime cohere-commandr runs your Command R trainer, and no trainer command was given",
                    obj="runtime",
                    hint="Give its command after -- (e.g. -- python train.py), or run with --mode pod beside "
                    "the trainer container",
                )
            return None, cohere.flat(config.cohere_ft), env
        if has_command:  # your own trainer: it gets every key, nothing is mapped
            return None, cohere.flat(config.cohere_ft), env
        cohere.check_builtin(config.cohere_ft)
        return "peft-lora", cohere.trainer_hyperparameters(config.cohere_ft), env
    if runtime not in PEFT_RUNTIMES and not has_command:
        raise UsageError(
            f"unknown training runtime {config.runtime!r}", hint="Use runtime: peft, cohere or cohere-commandr"
        )
    peft = config.peft_ft
    hyper = {
        k: v for k, v in peft.model_dump().items() if v is not None and k not in ("model_name", "train_dataset_file")
    }
    return (None if has_command else "peft-lora"), hyper, {}


def settings_from_ome(config: Any, *, has_command: bool, pod: bool = False) -> dict[str, Any]:
    """SidecarSettings fields from an ``OMEAgentConfig`` (pure)."""
    name = config.training_name
    if not name:
        raise UsageError("training-agent needs training_name", hint="Set training_name or OME_AGENT_TRAINING_NAME")
    peft = config.peft_ft
    runtime, hyper, env = _runtime(config, has_command=has_command, pod=pod)
    base = config.model_directory or peft.model_name
    if not base:
        raise UsageError(
            "training-agent needs the base model",
            hint="Set model_directory (a local or mounted path) or peft_ft.model_name (a path or storage URI)",
        )
    auth = "user_principal"
    if config.auth_type:
        from modelferry.omeagent.translate import AUTH_TYPES

        auth = AUTH_TYPES.get(config.auth_type.strip().lower(), "")
        if not auth:
            raise UsageError(
                f"auth_type {config.auth_type!r} is not supported",
                hint="Use UserPrincipal, InstancePrincipal or ResourcePrincipal",
            )
    oci = {"auth_type": auth, "profile": config.profile}
    obo = _obo_token(config)
    data_uri = _oci("training_data", config.training_data, peft.train_dataset_file)
    return {
        "runtime": runtime,
        "trainer_env": env,
        "base_model_uri": base,
        "dataset_uri": data_uri,
        "output_uri": _oci("model", config.model, name, "fine-tuned-model-weights"),
        "hyperparameters": hyper,
        "tags": {
            "ome.training_name": name,
            "ome.metrics_uri": _oci("training_metrics", config.training_metrics, name, "model-training-metrics"),
        },
        "mlflow": {"run_name": name},
        "source": {"oci": {**oci, "obo_token": obo} if obo else oci},
        "target": {"oci": oci},
    }


@click.command("training-agent", context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_path", default=None, help="OME-Agent YAML configuration (OME_AGENT_* override it).")
@click.option("--workspace", default="./workspace", show_default=True, help="Workspace directory.")
@click.option(
    "--mode",
    type=click.Choice(["local", "pod"]),
    default="local",
    show_default=True,
    help="Trainer as a child or a container.",
)
@click.option("--json", "json_output", is_flag=True, help="Print the result as JSON on stdout.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def training_agent_command(
    config_path: str | None, workspace: str, mode: str, json_output: bool, command: tuple[str, ...]
) -> None:
    """OME-Agent compatible training sidecar (runtimes peft, cohere, cohere-commandr).

    \b
    Example:
      modelferry training-agent --config training.yaml
      modelferry training-agent --config training.yaml -- python my_train.py
    """
    from modelferry.cli.sidecar import build_sidecar_settings
    from modelferry.omeagent.config import load_ome_config
    from modelferry.sidecar.runner import run_training

    config, report = load_ome_config(config_path, "training-agent")
    report.warn()
    argv = [c for c in command if c != "--"] if command[:1] == ("--",) else list(command)
    fields = settings_from_ome(config, has_command=bool(argv), pod=mode == "pod")
    metrics_uri = fields["tags"]["ome.metrics_uri"]
    settings = build_sidecar_settings(fields, {"workspace": workspace, "mode": mode})
    with contextlib.redirect_stdout(sys.stderr) if json_output else contextlib.nullcontext():
        result = run_training(settings, argv)
        if result.exit_code == 0:
            _ship_metrics(settings, metrics_uri)
    if json_output:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    if result.exit_code:
        sys.exit(result.exit_code)


def _ship_metrics(settings: Any, metrics_uri: str) -> None:
    """OME keeps metrics in their own bucket (training_metrics.*): copy the metrics files there too."""
    from modelferry.settings import Credentials
    from modelferry.sidecar.staging import copy_tree
    from modelferry.uri import parse_uri

    output = (settings.workspace / settings.output_dir).resolve()
    copy_tree(
        parse_uri(str(output)),
        parse_uri(metrics_uri),
        Credentials(),
        settings.target,
        settings.transfer,
        include=("metrics.jsonl", "metrics_summary.json", "trainer.log", "train_summary.json"),
    )
