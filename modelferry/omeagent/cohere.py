"""OME-Agent's ``cohere`` and ``cohere-commandr`` training runtimes: required keys and what reaches the trainer.

Pure functions over :class:`~modelferry.omeagent.config.CohereFT`. ``cohere`` runs modelferry's
built-in trainer (``strategy: lora`` -> LoRA; ``strategy: vanilla`` -> the last ``n_last_layers``
layers trained, the rest frozen); ``cohere-commandr`` runs the user's Command R trainer. Either
way every ``cohere_ft.*`` key set reaches the trainer as its ``OME_AGENT_COHERE_FT_*`` variable.
"""

from __future__ import annotations

from typing import Any

from modelferry.errors import UsageError

COHERE_RUNTIMES = ("cohere", "cohere-commandr")
STRATEGIES = ("lora", "vanilla")
# Required by OME's table ("yes") for both runtimes.
ALWAYS = (
    "size",
    "strategy",
    "train_epochs",
    "learning_rate",
    "train_batch_size",
    "early_stopping_patience",
    "early_stopping_threshold",
)
# cohere_ft key -> the built-in trainer's hyperparameter (the peft_ft.* names it already takes)
TO_TRAINER = {
    "train_epochs": "num_train_epochs",
    "learning_rate": "learning_rate",
    "train_batch_size": "train_batch_size",
    "early_stopping_patience": "early_stopping_patience",
    "early_stopping_threshold": "early_stopping_threshold",
    "log_train_status_every_steps": "log_model_metrics_interval_in_steps",
    "n_last_layers": "n_last_layers",
    "strategy": "strategy",
}


def flat(ft: Any) -> dict[str, Any]:
    """``cohere_ft`` as dotted keys with values set (``lora_config.rank``...)."""
    out: dict[str, Any] = {}
    for key, value in ft.model_dump().items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items() if v is not None})
        elif value is not None:
            out[key] = value
    return out


def required_keys(runtime: str, ft: Any) -> list[str]:
    """The ``cohere_ft.*`` keys OME's table requires for this runtime and these values (its "yes when")."""
    keys = list(ALWAYS)
    strategy = str(ft.strategy or "").lower()
    if runtime == "cohere":
        keys.append("log_train_status_every_steps")
        if strategy == "vanilla":
            keys.append("n_last_layers")
    if runtime == "cohere-commandr":
        keys += ["serving_strategy", "base_model"]
        if str(ft.serving_strategy or "").lower() == "vanilla":
            keys.append("tensor_parallel_size")
    if strategy == "lora":
        keys += ["lora_config.rank", "lora_config.alpha"]
    return keys


def check(runtime: str, ft: Any) -> None:
    """Refuse a configuration that lacks a required key, naming the first one missing and its variable."""
    have = flat(ft)
    for key in required_keys(runtime, ft):
        if key not in have:
            env = "OME_AGENT_COHERE_FT_" + key.replace(".", "_").upper()
            raise UsageError(
                f"runtime {runtime} needs cohere_ft.{key}",
                obj=f"cohere_ft.{key}",
                hint=f"Set cohere_ft.{key} in the config file or {env} (see OME-Agent's table)",
            )


def check_builtin(ft: Any) -> None:
    """What the built-in trainer (``runtime: cohere`` without a command of your own) can do."""
    strategy = str(ft.strategy).lower()
    if strategy not in STRATEGIES:
        raise UsageError(
            f"cohere_ft.strategy {ft.strategy!r} is not supported by the built-in cohere trainer",
            obj="cohere_ft.strategy",
            hint="Use lora or vanilla, or give your own trainer command after --",
        )
    if strategy == "vanilla" and int(ft.n_last_layers) < 1:
        raise UsageError("cohere_ft.n_last_layers must be at least 1", obj="cohere_ft.n_last_layers")


def trainer_hyperparameters(ft: Any) -> dict[str, Any]:
    """The built-in trainer's hyperparameters for ``runtime: cohere``."""
    have = flat(ft)
    hyper = {TO_TRAINER[k]: v for k, v in have.items() if k in TO_TRAINER}
    hyper["strategy"] = str(ft.strategy).lower()
    if hyper["strategy"] == "lora":
        hyper["lora_r"] = have["lora_config.rank"]
        hyper["lora_alpha"] = have["lora_config.alpha"]
    else:
        hyper.pop("lora_r", None)
    return hyper


def trainer_env(ft: Any, training_name: str) -> dict[str, str]:
    """Every ``cohere_ft.*`` key set, as OME-Agent's ``OME_AGENT_COHERE_FT_*`` variables for the trainer."""
    env = {"OME_AGENT_COHERE_FT_" + k.replace(".", "_").upper(): str(v) for k, v in flat(ft).items()}
    env.setdefault("OME_AGENT_COHERE_FT_NAME", training_name)  # OME's default: equals training_name
    return env
