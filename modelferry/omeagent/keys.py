"""The OME-Agent configuration keys, as tabled in OME-Agent's README, and who consumes each.

Every YAML key has an ``OME_AGENT_*`` variable (nested keys join with ``_``,
upper case). The original table has typos that deployed configs depend on, so
both spellings are accepted:

* ``max_retry`` / ``max_retries`` (``OME_AGENT_MAX_RETRY`` / ``OME_AGENT_MAX_RETRIES``)
* ``retry_internal_in_seconds`` / ``retry_interval_in_seconds``
  (``OME_AGENT_RETRY_INTERVAL_IN_SECONDS`` / ``OME_AGENT_RETRY_INTERNAL_IN_SECONDS``)
* ``peft_ft.log_model_metrics_interval_in_steps`` (``..._INTERNAL_IN_STEPS`` / ``..._INTERVAL_IN_STEPS``)

``used_by`` names the modelferry subcommands that read a key; a subcommand ignores
keys it does not use (they belong to another subcommand of the same file). Keys
no subcommand supports are reported with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

HF_DOWNLOAD = "hf-download"
REPLICA = "replica"
ENIGMA = "enigma"
TRAINING_AGENT = "training-agent"
SUBCOMMANDS = (HF_DOWNLOAD, REPLICA, ENIGMA, TRAINING_AGENT)
ENV_PREFIX = "OME_AGENT_"


@dataclass(frozen=True)
class OMEKey:
    """One row of the OME-Agent table."""

    key: str  # canonical dotted YAML key (the field path in OMEAgentConfig)
    default: str | None = None  # the default OME-Agent documents (informational)
    used_by: tuple[str, ...] = ()
    yaml_aliases: tuple[str, ...] = ()
    env_aliases: tuple[str, ...] = ()
    note: str = ""

    @property
    def env(self) -> str:
        """The primary ``OME_AGENT_*`` variable."""
        return ENV_PREFIX + self.key.replace(".", "_").upper()

    @property
    def env_names(self) -> tuple[str, ...]:
        return (self.env, *self.env_aliases)

    @property
    def yaml_names(self) -> tuple[str, ...]:
        return (self.key, *self.yaml_aliases)

    @property
    def supported(self) -> bool:
        return bool(self.used_by)


_HF, _REP, _EN, _TA = HF_DOWNLOAD, REPLICA, ENIGMA, TRAINING_AGENT
_OCI_AUTH = (_REP, _EN, _TA)


def _bucket(section: str, used_by: tuple[str, ...], defaults: dict[str, str] | None = None) -> list[OMEKey]:
    fields = (
        ("bucket_name", "prefix", "region", "namespace")
        if section in ("source", "target")
        else (
            "bucket_name",
            "namespace",
            "object_name",
        )
    )
    return [OMEKey(f"{section}.{f}", (defaults or {}).get(f), used_by) for f in fields]


_UNSUPPORTED = "describes OME's own TensorRT-LLM serving; modelferry does not use it"

KEYS: tuple[OMEKey, ...] = (
    OMEKey("auth_type", None, _OCI_AUTH, note="UserPrincipal, InstancePrincipal or ResourcePrincipal"),
    OMEKey("profile", "DEFAULT", _OCI_AUTH),
    OMEKey("local_path", None, (_HF, _EN, _TA)),
    OMEKey("model_store_directory", "/opt/ml/model", (_HF, _EN)),
    OMEKey("skip_sha", "false", (_HF,)),
    OMEKey("max_retries", "5", (_HF, _REP), yaml_aliases=("max_retry",), env_aliases=("OME_AGENT_MAX_RETRY",)),
    OMEKey(
        "retry_interval_in_seconds",
        "10",
        (_HF, _REP),
        yaml_aliases=("retry_internal_in_seconds",),
        env_aliases=("OME_AGENT_RETRY_INTERNAL_IN_SECONDS",),
    ),
    OMEKey("model_name", None, (_HF, _EN)),
    OMEKey("revision", "main", (_HF,), note="modelferry extension: branch, tag or commit of model_name"),
    OMEKey("hf_token", None, (_HF,)),
    OMEKey("num_connections", "10", (_HF, _REP)),
    OMEKey("download_size_limit_gb", "650", (_HF,)),
    OMEKey("enable_size_limit_check", "true", (_HF,)),
    *_bucket("source", (_REP,)),
    *_bucket("target", (_REP,)),
    OMEKey("compartment_id", None, (_EN,)),
    OMEKey("vault_id", None, (_EN,)),
    OMEKey("key_name", None, (_EN,)),
    OMEKey("secret_name", "<key_name>-dek", (_EN,)),
    OMEKey("model_type", None, (), note=_UNSUPPORTED),
    OMEKey("model_framework", "tensorrtllm", (), note=_UNSUPPORTED),
    OMEKey("tensorrtllm_version", "v0.11.0", (), note=_UNSUPPORTED),
    OMEKey("node_shape_alias", None, (), note=_UNSUPPORTED),
    OMEKey("num_of_gpu", "1", (), note=_UNSUPPORTED),
    OMEKey("disable_model_decryption", "false", (_EN,)),
    OMEKey("runtime", "cohere", (_TA,)),
    OMEKey("training_name", None, (_TA,)),
    OMEKey("model_directory", None, (_TA,)),
    OMEKey("input_object_store.enable_obo_token", "true", (_TA,)),
    OMEKey("input_object_store.obo_token", None, (_TA,)),
    *_bucket("training_data", (_TA,)),
    *_bucket("model", (_TA,), {"bucket_name": "fine-tuned-model-weights", "object_name": "<training_name>"}),
    *_bucket("training_metrics", (_TA,), {"bucket_name": "model-training-metrics", "object_name": "<training_name>"}),
    OMEKey("cohere_ft.name", "<training_name>", (_TA,)),
    *(
        OMEKey(f"cohere_ft.{f}", None, (_TA,))
        for f in (
            "size",
            "strategy",
            "serving_strategy",
            "train_epochs",
            "learning_rate",
            "train_batch_size",
            "early_stopping_patience",
            "early_stopping_threshold",
            "log_train_status_every_steps",
            "n_last_layers",
            "tensor_parallel_size",
            "base_model",
            "lora_config.rank",
            "lora_config.alpha",
        )
    ),
    *(
        OMEKey(f"peft_ft.{f}", None, (_TA,))
        for f in (
            "model_name",
            "train_dataset_file",
            "num_train_epochs",
            "learning_rate",
            "train_batch_size",
            "early_stopping_patience",
            "early_stopping_threshold",
        )
    ),
    OMEKey(
        "peft_ft.log_model_metrics_interval_in_steps",
        None,
        (_TA,),
        yaml_aliases=("peft_ft.log_model_metrics_internal_in_steps",),
        env_aliases=("OME_AGENT_PEFT_FT_LOG_MODEL_METRICS_INTERNAL_IN_STEPS",),
    ),
    OMEKey("peft_ft.peft_type", "lora", (_TA,)),
    *(OMEKey(f"peft_ft.{f}", None, (_TA,)) for f in ("lora_r", "lora_alpha", "lora_dropout")),
)

BY_KEY: dict[str, OMEKey] = {k.key: k for k in KEYS}
YAML_TO_KEY: dict[str, str] = {name: k.key for k in KEYS for name in k.yaml_names}
ENV_TO_KEY: dict[str, str] = {name: k.key for k in KEYS for name in k.env_names}
SECTIONS: frozenset[str] = frozenset(k.key.split(".")[0] for k in KEYS if "." in k.key) | {"cohere_ft.lora_config"}


def keys_for(subcommand: str) -> tuple[OMEKey, ...]:
    """The keys one subcommand reads (for enigma and training-agent to build on)."""
    return tuple(k for k in KEYS if subcommand in k.used_by)
