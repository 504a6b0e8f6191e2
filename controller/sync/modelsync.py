"""ModelSync, pure: a ModelSync plus the Secrets it names -> the Job to run; a Job + pods -> status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelferry.backends import SecretUse, backend_for, secret_keys
from modelferry.controller.api.v1alpha1 import modelsync as api
from modelferry.controller.config.controller import ControllerSettings
from modelferry.controller.kube.expansion import literal
from modelferry.controller.sync.job import JobOverrides, JobRequest, render_job
from modelferry.controller.sync.jobpolicy import check_job_overrides
from modelferry.controller.sync.secretmode import Finding
from modelferry.controller.sync.transferspec import transfer_env_for
from modelferry.controller.workload.cabundle import invalid_ca_reference
from modelferry.controller.workload.claims import claim_mounts
from modelferry.controller.workload.identity import GROUP, VERSION, bounded_name, inputs_hash, owner_reference
from modelferry.controller.workload.secrets import (
    not_text_finding,
    register_credentials,
    secret_data,
    secret_ref,
    undecodable_keys,
)
from modelferry.errors import InvalidSpecError, InvalidURIError, SourceNotAllowedError
from modelferry.source_policy import check_cluster_source
from modelferry.uri import parse_uri

KIND = "ModelSync"
PLURAL = "modelsyncs"


@dataclass
class SyncPlan:
    """The decision for one ModelSync: a Job to ensure, or an error for Ready=False."""

    job: dict[str, Any] | None = None
    error: Finding | None = None


def referenced_secrets(modelsync: dict[str, Any]) -> list[str]:
    """Names of the Secrets a ModelSync reads (the controller fetches them for :func:`plan_modelsync_job`).

    A spec of the wrong shape reads none: :func:`plan_modelsync_job` refuses it before any Secret counts.
    """
    try:
        spec = api.parse_spec(modelsync)
    except InvalidSpecError:
        return []
    names = [
        spec.source.credentials_secret,
        spec.target.credentials_secret,
        spec.target.data_connection,
        spec.decrypt.credentials_secret if spec.decrypt is not None else None,
    ]
    return [name for name in names if name]


# Keys of a decrypt Secret handed to the sync as environment (by reference): enigma's own settings plus
# the standard variables of the KMS clients.
DECRYPT_KEY_PREFIXES = ("MODELFERRY_ENIGMA__", "VAULT_", "BAO_", "AWS_", "OCI_")


def _decrypt_env(
    decrypt: api.Decrypt, secrets: dict[str, dict[str, Any] | None]
) -> tuple[list[dict[str, Any]], Finding | None]:
    """``spec.decrypt``: the Secret whose keys configure the KMS that unwraps the data keys."""
    name = decrypt.credentials_secret
    if not name:
        return [], Finding(
            "InvalidDecrypt", "spec.decrypt needs credentialsSecret (a Secret with MODELFERRY_ENIGMA__* keys)"
        )
    secret = secrets.get(name)
    if secret is None:
        return [], Finding(
            "CredentialsSecretNotFound",
            f"decrypt Secret {name!r} does not exist in this namespace; create it or fix spec.decrypt.credentialsSecret",
        )
    keys = sorted(k for k in secret_data(secret) if k.startswith(DECRYPT_KEY_PREFIXES))
    if not keys:
        return [], Finding(
            "CredentialsSecretInvalid",
            f"decrypt Secret {name!r} holds no MODELFERRY_ENIGMA__*, VAULT_*, AWS_* or OCI_* keys; "
            "add e.g. MODELFERRY_ENIGMA__VAULT__ADDRESS and VAULT_TOKEN",
        )
    return [secret_ref(key, name, key) for key in keys], None


def _credential_env(side: str, secret_name: str, values: dict[str, str]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    seen: set[str] = set()
    # Secret key -> settings field, per credentials block (each backend's, modelferry.backends); by reference.
    for key, block, field_name in secret_keys(SecretUse.MODELSYNC):
        env_name = f"MODELFERRY_{side}__{block.upper()}__{field_name.upper()}"
        if key in values and env_name not in seen:
            seen.add(env_name)
            env.append(secret_ref(env_name, secret_name, key))
    return env


def _credentials(
    side: str, name: str | None, secrets: dict[str, dict[str, Any] | None]
) -> tuple[list[dict[str, Any]], Finding | None]:
    if not name:
        return [], None
    secret = secrets.get(name)
    if secret is None:
        return [], Finding(
            "CredentialsSecretNotFound",
            f"{side.lower()} credentials Secret {name!r} does not exist in this namespace; create it or fix "
            f"spec.{side.lower()}.credentialsSecret",
        )
    values = secret_data(secret)
    env = _credential_env(side, name, values)
    if not env:
        known = sorted({key for key, _, _ in secret_keys(SecretUse.MODELSYNC)})
        return [], Finding(
            "CredentialsSecretInvalid",
            f"Secret {name!r} holds none of the keys modelferry reads ({', '.join(known)}); add the right keys",
        )
    return env, None


def _target_arg(
    target: api.Target, secrets: dict[str, dict[str, Any] | None]
) -> tuple[str, list[dict[str, Any]], Finding | None]:
    """``spec.target``: the sync's target argument and the env it needs (a data connection's, by reference)."""
    if target.uri:
        try:
            target_uri = parse_uri(target.uri)
        except InvalidURIError as exc:
            return "", [], Finding("InvalidTargetURI", f"spec.target.uri: {exc}; fix the ModelSync")
        if not backend_for(target_uri.scheme).can_be_target:
            return "", [], Finding("InvalidTargetURI", f"spec.target.uri: {target_uri.scheme}:// cannot be a target")
        return literal(target.uri), [], None
    if not target.data_connection:
        return "", [], Finding("TargetNotConfigured", "set spec.target.uri or spec.target.dataConnection")
    connection_name = target.data_connection
    connection = secrets.get(connection_name)
    if connection is None:
        return (
            "",
            [],
            Finding(
                "DataConnectionNotFound",
                f"data connection Secret {connection_name!r} does not exist in this namespace; create it or fix "
                "spec.target.dataConnection",
            ),
        )
    values = secret_data(connection)
    missing = [k for k in ("AWS_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if k not in values]
    if missing:
        return (
            "",
            [],
            Finding(
                "DataConnectionInvalid", f"data connection {connection_name!r} lacks {', '.join(missing)}; add them"
            ),
        )
    path = (target.path or "models/").strip("/")
    try:
        parse_uri(f"s3://{values['AWS_S3_BUCKET']}/{path}")
    except InvalidURIError as exc:
        return "", [], Finding("InvalidTargetURI", f"data connection {connection_name!r} / spec.target.path: {exc}")
    env = [
        secret_ref("MF_DEST_BUCKET", connection_name, "AWS_S3_BUCKET"),
        *_credential_env("TARGET", connection_name, values),
    ]
    return (f"s3://$(MF_DEST_BUCKET)/{literal(path)}/" if path else "s3://$(MF_DEST_BUCKET)/"), env, None


def _source_args(source: api.Source) -> list[str]:
    """``spec.source``'s revision and file filters as sync options; every user string passed literally."""
    args: list[str] = []
    if source.revision:
        args += ["--revision", literal(source.revision)]
    for pattern in source.include:
        args += ["--include", literal(pattern)]
    for pattern in source.exclude:
        args += ["--exclude", literal(pattern)]
    return args


def plan_modelsync_job(
    modelsync: dict[str, Any], secrets: dict[str, dict[str, Any] | None], settings: ControllerSettings
) -> SyncPlan:
    """The Job for a ModelSync. ``secrets`` maps each :func:`referenced_secrets` name to the Secret or None."""
    meta = modelsync.get("metadata") or {}
    try:
        spec = api.parse_spec(modelsync)
    except InvalidSpecError as exc:
        return SyncPlan(error=Finding(exc.reason, str(exc)))
    source, target, job_spec = spec.source, spec.target, spec.job
    for secret_name, secret in secrets.items():
        register_credentials(secret)
        bad = undecodable_keys(secret)
        if bad:
            return SyncPlan(error=Finding("SecretValueNotText", not_text_finding(secret_name, bad)))
    refused = check_job_overrides(job_spec, settings.job_policy, settings.job)
    if refused is not None:
        return SyncPlan(error=refused)
    try:
        source_uri = parse_uri(source.uri, revision=source.revision)
    except InvalidURIError as exc:
        return SyncPlan(error=Finding("InvalidSourceURI", f"spec.source.uri: {exc}; fix the ModelSync"))
    try:
        check_cluster_source(
            source_uri,
            allowed_local_roots=settings.allowed_local_roots,
            mounted_claims=[source_uri.bucket]
            if source_uri.scheme == "pvc"
            else [],  # claim_mounts below mounts it, or refuses
            where="spec.source.uri",
        )
    except SourceNotAllowedError as exc:
        return SyncPlan(error=Finding(exc.reason, f"{exc}; fix the ModelSync"))
    env: list[dict[str, Any]] = []
    src_env, err = _credentials("SOURCE", source.credentials_secret, secrets)
    if err:
        return SyncPlan(error=err)
    env += src_env
    target_arg, connection_env, err = _target_arg(target, secrets)
    if err:
        return SyncPlan(error=err)
    env += connection_env
    tgt_env, err = _credentials("TARGET", target.credentials_secret, secrets)
    if err:
        return SyncPlan(error=err)
    transfer_env, err = transfer_env_for(spec.transfer)
    if err:
        return SyncPlan(error=err)
    env += tgt_env + transfer_env
    claims = claim_mounts(
        [("spec.source.uri", source.uri, False), ("spec.target.uri", target.uri or "", True)],
        meta.get("namespace", ""),
    )
    if claims.error:
        return SyncPlan(error=Finding("ClaimNotMountable", claims.error))
    # Every user string is passed literally: Kubernetes would expand $(VAR) in it (see jobs.literal).
    args = ["sync", literal(source.uri), target_arg, "--json"]
    if spec.decrypt is not None:
        decrypt_env, err = _decrypt_env(spec.decrypt, secrets)
        if err:
            return SyncPlan(error=err)
        env += decrypt_env
        args.append("--decrypt")
    args += _source_args(source)
    ca_configmap = job_spec.ca_config_map
    problem = (
        invalid_ca_reference(ca_configmap) if ca_configmap is None or isinstance(ca_configmap, str) else "not a string"
    )
    if problem:
        return SyncPlan(error=Finding("InvalidCAConfigMap", f"spec.job.caConfigMap: {problem}; fix the ModelSync"))
    request = JobRequest(
        name=job_name(meta.get("name", "")),
        namespace=meta.get("namespace", ""),
        args=args,
        env=env,
        owner=owner_reference({"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": meta}),
        owner_kind=KIND,
        owner_name=meta.get("name", ""),
        mode="modelsync",
        overrides=JobOverrides(
            image=job_spec.image,
            resources=job_spec.resources,
            node_selector=job_spec.node_selector or None,
            tolerations=job_spec.tolerations or None,
            service_account_name=job_spec.service_account_name,
            active_deadline_seconds=job_spec.active_deadline_seconds,
            backoff_limit=job_spec.backoff_limit,
            ca_configmap=ca_configmap,
        ),
        volumes=claims.volumes,
        volume_mounts=claims.mounts,
    )
    digests = {name: inputs_hash(secret_data(secret)) for name, secret in sorted(secrets.items()) if secret}
    return SyncPlan(job=render_job(request, settings.job, extra_hash=digests))


def job_name(modelsync_name: str) -> str:
    """The Job of ModelSync ``name`` (63 characters at most, the label limit).

    A name that does not fit is cut and ends in a hash of the whole name, so two ModelSyncs whose
    names share their first 50 characters never share (and replace) one Job.
    """
    return bounded_name(f"modelsync-{modelsync_name}")
