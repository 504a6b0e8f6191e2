"""Secret mode, pure: a ``model-source`` Secret plus its data connection -> the ``synchronize-model`` Job.

Compatible with the OpenShift AI proof-of-concept automation (REFERENCE 1.1/1.2). The controller
reads the Secrets to decide *which* Job to render and to validate values; the Job itself receives
every credential and location only by ``secretKeyRef`` (URIs are assembled by Kubernetes with
``$(VAR)`` expansion inside the container's args).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelferry.backends import SecretUse, secret_keys
from modelferry.controller.config.controller import ControllerSettings
from modelferry.controller.kube.expansion import literal
from modelferry.controller.sync.job import JobOverrides, JobRequest, render_job
from modelferry.controller.workload.identity import inputs_hash, owner_reference
from modelferry.controller.workload.secrets import (
    is_true,
    not_text_finding,
    register_credentials,
    secret_data,
    secret_ref,
    undecodable_keys,
)
from modelferry.errors import InvalidURIError, SourceNotAllowedError
from modelferry.source_policy import check_cluster_source
from modelferry.units import parse_size
from modelferry.uri import parse_uri

MiB = 1 << 20
TARGET_REQUIRED = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_S3_BUCKET")
COS_KEYS = ("S3_SYNC_COS_TEMPORARY_PASSCODE", "S3_SYNC_COS_API_KEY", "IBMCLOUD_API_KEY")

# The data connection's key for each s3 settings field (the s3 backend's, modelferry.backends).
_DATA_CONNECTION = {name: key for key, block, name in secret_keys(SecretUse.DATA_CONNECTION) if block == "s3"}
# (model-source key suffix, data-connection fall-back key, settings field)
S3_FIELDS = (
    *(
        (suffix, _DATA_CONNECTION[name], name.upper())
        for suffix, name in (
            ("ENDPOINT", "endpoint_url"),
            ("ACCESS_KEY", "access_key_id"),
            ("SECRET_KEY", "secret_access_key"),
            ("REGION", "region"),
        )
    ),
    ("VALIDATE_TLS", None, "VERIFY_TLS"),
)


@dataclass
class Finding:
    """A problem or warning for an Event: CamelCase reason plus a message that says what to fix."""

    reason: str
    message: str


@dataclass
class SecretPlan:
    """The decision for one model-source Secret."""

    mode: str  # complete | s3 | cos | invalid
    job: dict[str, Any] | None = None
    error: Finding | None = None
    warnings: list[Finding] = field(default_factory=list)


def is_model_source(secret: dict[str, Any], settings: ControllerSettings) -> bool:
    """Named ``model-source`` (configurable) or labelled ``modelferry.io/model-source: "true"``."""
    meta = secret.get("metadata") or {}
    labels = meta.get("labels") or {}
    return meta.get("name") == settings.model_source_secret or is_true(labels.get(settings.model_source_label))


def data_connection_name(source: dict[str, str], settings: ControllerSettings) -> str:
    """The target Secret (data connection): ``S3_SYNC_DATA_CONNECTION`` in the model-source, else the default."""
    return source.get("S3_SYNC_DATA_CONNECTION", "").strip() or settings.data_connection


def _transfer_env(values: dict[str, str]) -> tuple[list[dict[str, Any]], Finding | None]:
    """S3_SYNC_TRANSFER_CONFIG__* tuning numbers (not credentials) -> MODELFERRY_TRANSFER__*."""
    prefix = "S3_SYNC_TRANSFER_CONFIG__"
    try:
        files = int(values.get(prefix + "MAX_FILES", "1") or 1)
        threads = int(values.get(prefix + "MAX_THREADS_PER_FILE", "5") or 5)
        chunk_text = values.get(prefix + "CHUNK_SIZE", "15MiB") or "15MiB"
        chunk = parse_size(chunk_text) or 15 * MiB
    except Exception:
        return [], Finding(
            "InvalidTransferConfig",
            "S3_SYNC_TRANSFER_CONFIG__MAX_FILES/__MAX_THREADS_PER_FILE must be integers and __CHUNK_SIZE a size "
            "such as 15MiB; fix the model-source Secret",
        )
    if files < 1 or threads < 1 or chunk < MiB:
        return [], Finding(
            "InvalidTransferConfig",
            "S3_SYNC_TRANSFER_CONFIG__ values must be at least 1 (files, threads) and 1MiB (chunk size)",
        )
    concurrency = min(256, files * threads)
    return [
        {"name": "MODELFERRY_TRANSFER__CONCURRENCY", "value": str(concurrency)},
        {"name": "MODELFERRY_TRANSFER__PART_SIZE", "value": str(chunk)},
    ], None


def _target(
    source: dict[str, str], target_name: str, target_values: dict[str, str] | None, src_secret: str
) -> tuple[list[dict[str, Any]], str, Finding | None]:
    """Target env (by reference) and the target URI template; S3_SYNC_DEST__* override the data connection."""
    if target_values is None:
        return (
            [],
            "",
            Finding(
                "DataConnectionNotFound",
                f"data connection Secret {target_name!r} does not exist in this namespace; create it (an S3 data "
                "connection with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_S3_ENDPOINT, AWS_S3_BUCKET) or set "
                "S3_SYNC_DATA_CONNECTION in the model-source Secret",
            ),
        )
    env: list[dict[str, Any]] = []
    missing = []
    for suffix, target_key, target_field in (*S3_FIELDS, ("BUCKET", "AWS_S3_BUCKET", "BUCKET")):
        env_name = "MF_DEST_BUCKET" if target_field == "BUCKET" else f"MODELFERRY_TARGET__S3__{target_field}"
        override = f"S3_SYNC_DEST__{suffix}"
        if override in source:
            env.append(secret_ref(env_name, src_secret, override))
        elif target_key and target_key in target_values:
            env.append(secret_ref(env_name, target_name, target_key))
        elif target_key in TARGET_REQUIRED:
            missing.append(target_key)
    if missing:
        return (
            [],
            "",
            Finding(
                "DataConnectionInvalid",
                f"data connection Secret {target_name!r} lacks {', '.join(missing)}; add the keys (or S3_SYNC_DEST__* "
                "overrides in the model-source Secret)",
            ),
        )
    bucket = source.get("S3_SYNC_DEST__BUCKET") or target_values.get("AWS_S3_BUCKET", "")
    try:
        parse_uri(f"s3://{bucket}/models/")
    except InvalidURIError as exc:
        return [], "", Finding("InvalidTarget", f"destination bucket {bucket!r} is not valid: {exc}")
    return env, "s3://$(MF_DEST_BUCKET)/", None


def _s3_source(
    source: dict[str, str], name: str, target_name: str, target_values: dict[str, str]
) -> tuple[list[dict[str, Any]], Finding | None]:
    path = source.get("S3_SYNC_SRC__PATH", "").strip()
    if not path:
        return [], Finding(
            "SourceNotConfigured",
            "the model-source Secret sets none of S3_SYNC_LOCAL_UPLOAD_COMPLETE, S3_SYNC_USE_IBMCLOUD_CLI or "
            "S3_SYNC_SRC__PATH; set S3_SYNC_SRC__PATH to s3://bucket/prefix/ (see the example Secrets)",
        )
    try:
        uri = parse_uri(path)
        check_cluster_source(uri, where="S3_SYNC_SRC__PATH")
    except InvalidURIError as exc:
        return [], Finding("InvalidSourceURI", f"S3_SYNC_SRC__PATH is not a valid URI: {exc}")
    except SourceNotAllowedError as exc:
        return [], Finding(exc.reason, str(exc))
    if uri.scheme not in ("s3", "hf"):
        return [], Finding(
            "InvalidSourceURI", f"S3_SYNC_SRC__PATH must be an s3:// (or hf://) URI, not {uri.scheme}://"
        )
    env = [secret_ref("MF_SOURCE_URI", name, "S3_SYNC_SRC__PATH")]
    for suffix, target_key, settings_field in S3_FIELDS:
        env_name = f"MODELFERRY_SOURCE__S3__{settings_field}"
        key = f"S3_SYNC_SRC__{suffix}"
        if key in source:
            env.append(secret_ref(env_name, name, key))
        elif target_key and target_key in target_values:
            # Unset source values fall back to the target's AWS_* values.
            env.append(secret_ref(env_name, target_name, target_key))
    if "HF_TOKEN" in source:
        env.append(secret_ref("MODELFERRY_SOURCE__HF__TOKEN", name, "HF_TOKEN"))
    return env, None


def _cos_source(source: dict[str, str], name: str) -> tuple[list[dict[str, Any]], bool, Finding | None]:
    bucket = source.get("S3_SYNC_COS_BUCKET", "").strip()
    prefix = source.get("S3_SYNC_COS_MODEL_PREFIX", "").strip()
    missing = [k for k in ("S3_SYNC_COS_BUCKET", "S3_SYNC_COS_INSTANCE_CRN") if not source.get(k, "").strip()]
    if not any(source.get(k, "").strip() for k in COS_KEYS):
        missing.append("S3_SYNC_COS_TEMPORARY_PASSCODE (or S3_SYNC_COS_API_KEY / IBMCLOUD_API_KEY)")
    if missing:
        return (
            [],
            False,
            Finding(
                "SourceNotConfigured",
                f"S3_SYNC_USE_IBMCLOUD_CLI is true but the model-source Secret lacks {', '.join(missing)}; add them",
            ),
        )
    try:
        parse_uri(f"cos://{bucket}/{prefix}")
    except InvalidURIError as exc:
        return [], False, Finding("InvalidSourceURI", f"S3_SYNC_COS_BUCKET/S3_SYNC_COS_MODEL_PREFIX: {exc}")
    env = [
        secret_ref("MF_COS_BUCKET", name, "S3_SYNC_COS_BUCKET"),
        secret_ref("MF_COS_PREFIX", name, "S3_SYNC_COS_MODEL_PREFIX", optional=True),
        secret_ref("MODELFERRY_SOURCE__COS__INSTANCE_CRN", name, "S3_SYNC_COS_INSTANCE_CRN"),
    ]
    if "S3_SYNC_COS_INSTANCE_REGION" in source:
        env.append(secret_ref("MODELFERRY_SOURCE__COS__REGION", name, "S3_SYNC_COS_INSTANCE_REGION"))
    api_key = next((k for k in ("S3_SYNC_COS_API_KEY", "IBMCLOUD_API_KEY") if source.get(k, "").strip()), None)
    passcode = bool(source.get("S3_SYNC_COS_TEMPORARY_PASSCODE", "").strip()) and api_key is None
    if api_key:
        env.append(secret_ref("MODELFERRY_SOURCE__COS__API_KEY", name, api_key))
    else:
        env.append(secret_ref("MODELFERRY_SOURCE__COS__PASSCODE", name, "S3_SYNC_COS_TEMPORARY_PASSCODE"))
    return env, passcode, None


def plan_secret_job(
    secret: dict[str, Any],
    target_secret: dict[str, Any] | None,
    settings: ControllerSettings,
) -> SecretPlan:
    """Decide the ``synchronize-model`` Job for a model-source Secret (and its data connection or None)."""
    meta = secret.get("metadata") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace", "")
    source = secret_data(secret)
    target_name = data_connection_name(source, settings)
    target_values = secret_data(target_secret) if target_secret is not None else None
    register_credentials(secret)
    register_credentials(target_secret)
    warnings = []
    stray = sorted(k for k in source if k.startswith("AWS_"))
    if stray:
        warnings.append(
            Finding(
                "IgnoredDestinationKeys",
                f"keys {', '.join(stray)} in Secret {name!r} are ignored: destination credentials come from the data "
                f"connection {target_name!r}; use S3_SYNC_SRC__* for the source or S3_SYNC_DEST__* to override the destination",
            )
        )
    for obj, obj_name in ((secret, name), (target_secret, target_name)):
        bad = undecodable_keys(obj)
        if bad:  # read as "", they would otherwise look unset and the Event would blame the wrong key
            return SecretPlan("invalid", error=Finding("SecretValueNotText", not_text_finding(obj_name, bad)))
    request = JobRequest(
        name=settings.secret_job_name,
        namespace=namespace,
        args=[],
        owner=owner_reference({"apiVersion": "v1", "kind": "Secret", "metadata": meta}),
        owner_kind="Secret",
        owner_name=name,
    )
    if is_true(source.get("S3_SYNC_LOCAL_UPLOAD_COMPLETE")):
        # Wins over everything: the model was uploaded by hand; complete at once and say why.
        request.mode = "complete"
        request.args = [
            "noop",
            "--reason",
            # target_name is a Secret value: literal, or Kubernetes would expand $(VAR) in it.
            literal(
                f"S3_SYNC_LOCAL_UPLOAD_COMPLETE is true in Secret {namespace}/{name}: the model was uploaded "
                f"manually to the data connection {target_name!r} under {settings.target_prefix}; nothing to synchronize"
            ),
        ]
        job = render_job(request, settings.job, extra_hash=inputs_hash(source))
        return SecretPlan("complete", job=job, warnings=warnings)
    env_target, target_arg, err = _target(source, target_name, target_values, name)
    if err is not None or target_values is None:
        return SecretPlan("invalid", error=err, warnings=warnings)
    transfer_env, err = _transfer_env(source)
    if err is not None:
        return SecretPlan("invalid", error=err, warnings=warnings)
    passcode = False
    if is_true(source.get("S3_SYNC_USE_IBMCLOUD_CLI")):
        mode = "cos"
        env_src, passcode, err = _cos_source(source, name)
        source_arg = "cos://$(MF_COS_BUCKET)/$(MF_COS_PREFIX)"
    else:
        mode = "s3"
        env_src, err = _s3_source(source, name, target_name, target_values)
        source_arg = "$(MF_SOURCE_URI)"
    if err is not None:
        return SecretPlan("invalid", error=err, warnings=warnings)
    request.mode = mode
    request.env = [*env_src, *env_target, *transfer_env]
    request.args = ["sync", source_arg, target_arg + settings.target_prefix.strip("/") + "/", "--json"]
    if passcode:
        # A one-time passcode cannot be exchanged twice: a retried pod would only fail with a spent code.
        request.overrides = JobOverrides(backoff_limit=0)
        request.labels["modelferry.io/single-use-credential"] = "true"
    job = render_job(request, settings.job, extra_hash=inputs_hash(source, target_values))
    return SecretPlan(mode, job=job, warnings=warnings)
