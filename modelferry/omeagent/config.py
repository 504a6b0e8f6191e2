"""OME-Agent configuration: a YAML file plus ``OME_AGENT_*`` variables (variables win).

:func:`load_ome_config` reads both into :class:`OMEAgentConfig` (every key of the
OME-Agent table, typed) and a :class:`KeyReport` that says which keys were set,
which the calling subcommand ignores (they belong to another subcommand), which
no subcommand supports, and which are unknown. ``enigma --config`` and
``training-agent --config`` build on the same loader with their own subcommand
name; see :data:`modelferry.omeagent.keys.KEYS` for who reads what.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from modelferry.errors import UsageError
from modelferry.logs import register_secret
from modelferry.omeagent.keys import BY_KEY, ENV_PREFIX, ENV_TO_KEY, SECTIONS, YAML_TO_KEY, keys_for

log = logging.getLogger(__name__)

_STRICT = ConfigDict(extra="forbid")


class BucketLocation(BaseModel):
    """``source`` / ``target`` of ``replica``."""

    model_config = _STRICT
    bucket_name: str | None = Field(None, description="Bucket name")
    prefix: str = Field("", description="Object prefix (a directory: matched at a '/' boundary)")
    region: str | None = Field(None, description="OCI region, e.g. us-chicago-1")
    namespace: str | None = Field(None, description="Object Storage namespace (tenancy)")


class ObjectLocation(BaseModel):
    """``training_data`` / ``model`` / ``training_metrics`` of ``training-agent``."""

    model_config = _STRICT
    bucket_name: str | None = Field(None, description="Bucket name")
    namespace: str | None = Field(None, description="Object Storage namespace")
    object_name: str | None = Field(None, description="Object name (defaults to training_name where OME says so)")


class InputObjectStore(BaseModel):
    model_config = _STRICT
    enable_obo_token: bool = Field(True, description="Use an on-behalf-of token for the input bucket")
    obo_token: SecretStr | None = Field(None, description="The on-behalf-of token")


class LoraConfig(BaseModel):
    model_config = _STRICT
    rank: int | None = Field(None, description="LoRA rank (cohere_ft)")
    alpha: float | None = Field(None, description="LoRA alpha (cohere_ft)")


class CohereFT(BaseModel):
    """``cohere_ft.*`` (training-agent)."""

    model_config = _STRICT
    name: str | None = Field(None, description="Fine-tune name; training_name when unset")
    size: str | None = Field(None, description="Model size")
    strategy: str | None = Field(None, description="vanilla or lora")
    serving_strategy: str | None = Field(None, description="Serving strategy (cohere-commandr)")
    train_epochs: int | None = Field(None, description="Training epochs")
    learning_rate: float | None = Field(None, description="Learning rate")
    train_batch_size: int | None = Field(None, description="Batch size")
    early_stopping_patience: int | None = Field(None, description="Early stopping patience")
    early_stopping_threshold: float | None = Field(None, description="Early stopping threshold")
    log_train_status_every_steps: int | None = Field(None, description="Status log interval in steps")
    n_last_layers: int | None = Field(None, description="Layers to train (vanilla)")
    tensor_parallel_size: int | None = Field(None, description="Tensor parallel size")
    base_model: str | None = Field(None, description="Base model (cohere-commandr)")
    lora_config: LoraConfig = Field(default_factory=LoraConfig, description="LoRA parameters")


class PeftFT(BaseModel):
    """``peft_ft.*`` (training-agent)."""

    model_config = _STRICT
    model_name: str | None = Field(None, description="Base model")
    train_dataset_file: str | None = Field(None, description="Training dataset file")
    num_train_epochs: int | None = Field(None, description="Training epochs")
    learning_rate: float | None = Field(None, description="Learning rate")
    train_batch_size: int | None = Field(None, description="Batch size")
    early_stopping_patience: int | None = Field(None, description="Early stopping patience")
    early_stopping_threshold: float | None = Field(None, description="Early stopping threshold")
    log_model_metrics_interval_in_steps: int | None = Field(
        None, description="Metrics log interval (also spelled ..._internal_in_steps)"
    )
    peft_type: str = Field("lora", description="PEFT method")
    lora_r: int | None = Field(None, description="LoRA rank")
    lora_alpha: float | None = Field(None, description="LoRA alpha")
    lora_dropout: float | None = Field(None, description="LoRA dropout")


class OMEAgentConfig(BaseModel):
    """Every key of the OME-Agent table, with OME's defaults."""

    model_config = _STRICT
    auth_type: str | None = Field(None, description="UserPrincipal, InstancePrincipal or ResourcePrincipal")
    profile: str = Field("DEFAULT", description="Profile in the OCI config file")
    local_path: str | None = Field(None, description="Local directory for the model")
    model_store_directory: str = Field("/opt/ml/model", description="Model directory when local_path is unset")
    skip_sha: bool = Field(False, description="Trust sizes of existing files instead of hashing them")
    max_retries: int = Field(5, ge=0, description="Retries per request (also spelled max_retry)")
    retry_interval_in_seconds: float = Field(
        10, gt=0, description="First retry delay (also spelled retry_internal_in_seconds)"
    )
    model_name: str | None = Field(None, description="Hugging Face repo id, org/name")
    revision: str | None = Field(None, description="Branch, tag or commit of model_name (modelferry extension)")
    hf_token: SecretStr | None = Field(None, description="Hugging Face access token")
    num_connections: int = Field(10, ge=1, le=256, description="Concurrent connections")
    download_size_limit_gb: float = Field(650, gt=0, description="Refuse downloads larger than this (GB)")
    enable_size_limit_check: bool = Field(True, description="Apply download_size_limit_gb")
    source: BucketLocation = Field(default_factory=BucketLocation, description="replica source bucket")
    target: BucketLocation = Field(default_factory=BucketLocation, description="replica target bucket")
    compartment_id: str | None = Field(None, description="OCI compartment (enigma)")
    vault_id: str | None = Field(None, description="OCI Vault OCID (enigma)")
    key_name: str | None = Field(None, description="KMS key name (enigma)")
    secret_name: str | None = Field(None, description="Secret holding the data key; <key_name>-dek when unset")
    model_type: str | None = Field(None, description="OME serving metadata (not used)")
    model_framework: str = Field("tensorrtllm", description="OME serving metadata (not used)")
    tensorrtllm_version: str = Field("v0.11.0", description="OME serving metadata (not used)")
    node_shape_alias: str | None = Field(None, description="OME serving metadata (not used)")
    num_of_gpu: int = Field(1, description="OME serving metadata (not used)")
    disable_model_decryption: bool = Field(False, description="Copy encrypted weights as they are (enigma)")
    runtime: str = Field("cohere", description="Training runtime (training-agent)")
    training_name: str | None = Field(None, description="Training run name (training-agent)")
    model_directory: str | None = Field(None, description="Model directory (training-agent)")
    input_object_store: InputObjectStore = Field(default_factory=InputObjectStore, description="Input store auth")
    training_data: ObjectLocation = Field(default_factory=ObjectLocation, description="Training data object")
    model: ObjectLocation = Field(
        default_factory=lambda: ObjectLocation(bucket_name="fine-tuned-model-weights"),
        description="Where fine-tuned weights go",
    )
    training_metrics: ObjectLocation = Field(
        default_factory=lambda: ObjectLocation(bucket_name="model-training-metrics"),
        description="Where training metrics go",
    )
    cohere_ft: CohereFT = Field(default_factory=CohereFT, description="Cohere fine-tuning parameters")
    peft_ft: PeftFT = Field(default_factory=PeftFT, description="PEFT fine-tuning parameters")

    @property
    def model_dir(self) -> str:
        """Where hf-download writes: local_path, else model_store_directory."""
        return self.local_path or self.model_store_directory


@dataclass
class KeyReport:
    """Where each setting came from and which keys the subcommand will not use."""

    subcommand: str
    set_keys: dict[str, str] = field(default_factory=dict)  # canonical key -> "file" | "env NAME"
    ignored: list[str] = field(default_factory=list)  # other subcommands' keys
    unsupported: list[str] = field(default_factory=list)  # in the table, but modelferry does not use them
    unknown: list[str] = field(default_factory=list)  # not in the table at all

    def warn(self) -> None:
        """Log the findings: unsupported and unknown keys as warnings, ignored ones at debug."""
        for key in self.unsupported:
            log.warning(
                "OME-Agent key %s is not supported by modelferry and is ignored (%s)",
                key,
                BY_KEY[key].note or "no subcommand reads it",
            )
        for key in self.unknown:
            log.warning("unknown OME-Agent key %s is ignored (check its spelling)", key)
        for key in self.ignored:
            log.debug("OME-Agent key %s is not used by %s", key, self.subcommand)

    def raise_for_unusable(self) -> None:
        """Unknown keys inside a section this subcommand reads would change the copy: refuse them."""
        sections = {k.key.split(".")[0] for k in keys_for(self.subcommand) if "." in k.key}
        env_heads = tuple(f"{ENV_PREFIX}{s.upper()}_" for s in sections)
        bad = [u for u in self.unknown if ("." in u and u.split(".")[0] in sections) or u.startswith(env_heads)]
        if bad:
            raise UsageError(
                f"{self.subcommand} does not support {', '.join(bad)}",
                obj=bad[0],
                hint="Remove it or fix its spelling; supported keys are listed in the modelferry OME-Agent docs",
            )


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in data.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, Mapping) and dotted in SECTIONS:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *heads, last = dotted.split(".")
        for head in heads:
            node = node.setdefault(head, {})
        node[last] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The config file as a mapping; UsageError naming the file when it cannot be used."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read OME-Agent config file {path}: {exc.strerror}", obj=str(path)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"OME-Agent config file {path} is not valid YAML: {exc}", obj=str(path)) from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise UsageError(f"OME-Agent config file {path} must hold a mapping of keys", obj=str(path))
    return dict(data)


def load_ome_config(
    path: str | Path | None,
    subcommand: str,
    *,
    environ: Mapping[str, str] | None = None,
) -> tuple[OMEAgentConfig, KeyReport]:
    """Read the YAML file (optional) and ``OME_AGENT_*`` variables; variables override the file."""
    env = os.environ if environ is None else environ
    report = KeyReport(subcommand)
    values: dict[str, Any] = {}
    raw = read_yaml(path) if path else {}
    for name, value in _flatten(raw).items():
        key = YAML_TO_KEY.get(name)
        if key is None:
            report.unknown.append(name)
            continue
        if key in values and report.set_keys.get(key) == "file":
            log.warning("OME-Agent key %s is set twice in %s (two spellings); the later one wins", key, path)
        values[key] = value
        report.set_keys[key] = "file"
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        key = ENV_TO_KEY.get(name)
        if key is None:
            report.unknown.append(name)
            continue
        if env[name] == "":
            continue  # as in OME-Agent (Viper): an empty variable counts as unset
        values[key] = env[name]
        report.set_keys[key] = f"env {name}"
    for key in report.set_keys:
        spec = BY_KEY[key]
        if not spec.supported:
            report.unsupported.append(key)
        elif subcommand not in spec.used_by:
            report.ignored.append(key)
    try:
        config = OMEAgentConfig.model_validate(_nest(values))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])} ({BY_KEY[_key_of(err['loc'])].env}): {err['msg']}"
            if _key_of(err["loc"]) in BY_KEY
            else f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors()
        )
        raise UsageError(
            f"invalid OME-Agent configuration: {problems}",
            obj=str(path) if path else "OME_AGENT_* environment",
        ) from exc
    for secret in (config.hf_token, config.input_object_store.obo_token):
        if secret is not None:
            register_secret(secret.get_secret_value())
    return config, report


def _key_of(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)
