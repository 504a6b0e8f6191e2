"""``modelferry enigma encrypt|decrypt|rewrap|inspect PATH_OR_URI`` and OME-Agent ``enigma --config``."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from modelferry.cli.dataplane import _set, build_settings
from modelferry.cli.outcome import failure_record
from modelferry.enigma import files
from modelferry.enigma.crypto import default_workers
from modelferry.enigma.kms import ProviderCache, make_provider
from modelferry.enigma.locations import Location, WorkItem, open_location, sweep_local, work_items
from modelferry.enigma.omeconfig import load_ome_config
from modelferry.enigma.settings import EnigmaSettings, load_enigma_settings
from modelferry.errors import ModelferryError, UsageError

log = logging.getLogger("modelferry.enigma")


def parse_context(values: tuple[str, ...]) -> dict[str, str] | None:
    if not values:
        return None
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--context")
        out[key] = value
    return out


def build_enigma_settings(overrides: dict[str, Any]) -> EnigmaSettings:
    """Environment (MODELFERRY_ENIGMA__*) first, then command-line values that are not None."""

    def apply(settings: EnigmaSettings) -> EnigmaSettings:
        for dotted, value in overrides.items():
            if value is not None:
                settings = _set(settings, dotted, value)  # type: ignore[assignment]
        return settings

    return load_enigma_settings(apply)


def key_options(fn: Any) -> Any:
    """Options that choose and configure the KMS provider; each has a MODELFERRY_ENIGMA__* variable."""
    options = [
        click.option(
            "--provider",
            type=click.Choice(["local", "aws", "vault", "oci"]),
            default=None,
            help="KMS that wraps data keys when encrypting or rewrapping [local].",
        ),
        click.option("--key-id", default=None, help="AWS key id/ARN/alias, Vault transit key name, or OCI key OCID."),
        click.option("--key-file", default=None, help="Local provider: file with a 32-byte key (a mounted Secret)."),
        click.option(
            "--previous-key-file",
            multiple=True,
            help="Local provider: older key accepted for decrypt/rewrap (repeatable).",
        ),
        click.option("--kms-endpoint", default=None, help="AWS KMS endpoint override."),
        click.option("--kms-region", default=None, help="AWS KMS region."),
        click.option("--context", multiple=True, help="AWS encryption context KEY=VALUE (repeatable)."),
        click.option("--vault-addr", default=None, help="Vault/OpenBao address (env VAULT_ADDR, BAO_ADDR)."),
        click.option("--vault-token-file", default=None, help="File holding the Vault token (env VAULT_TOKEN)."),
        click.option("--vault-mount", default=None, help="Transit mount path [transit]."),
        click.option("--oci-vault-id", default=None, help="OCI Vault OCID."),
        click.option("--oci-compartment-id", default=None, help="OCI compartment OCID."),
        click.option("--oci-key-name", default=None, help="OCI master key display name."),
        click.option("--oci-secret-name", default=None, help="OCI secret holding the data key [<key_name>-dek]."),
        click.option("--oci-config", default=None, help="OCI config file."),
        click.option("--oci-profile", default=None, help="Profile in the OCI config file."),
        click.option(
            "--oci-auth",
            type=click.Choice(["user_principal", "instance_principal", "resource_principal"]),
            default=None,
            help="OCI authentication.",
        ),
        click.option("--workers", type=int, default=None, help="AES-GCM threads [one per core, up to 8]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def key_overrides(kw: dict[str, Any]) -> dict[str, Any]:
    key_id = kw.get("key_id")
    return {
        "provider": kw.get("provider"),
        "workers": kw.get("workers"),
        "local.key_file": kw.get("key_file"),
        "local.previous_key_files": list(kw["previous_key_file"]) if kw.get("previous_key_file") else None,
        "aws.key_id": key_id,
        "aws.endpoint_url": kw.get("kms_endpoint"),
        "aws.region": kw.get("kms_region"),
        "aws.encryption_context": parse_context(kw.get("context") or ()),
        "vault.address": kw.get("vault_addr"),
        "vault.token_file": kw.get("vault_token_file"),
        "vault.mount": kw.get("vault_mount"),
        "vault.key_name": key_id,
        "oci.key_id": key_id,
        "oci.vault_id": kw.get("oci_vault_id"),
        "oci.compartment_id": kw.get("oci_compartment_id"),
        "oci.key_name": kw.get("oci_key_name"),
        "oci.secret_name": kw.get("oci_secret_name"),
        "oci.config_file": kw.get("oci_config"),
        "oci.profile": kw.get("oci_profile"),
        "oci.auth_type": kw.get("oci_auth"),
    }


def output_options(fn: Any) -> Any:
    fn = click.option("--json", "json_output", is_flag=True, help="Print a JSON summary on stdout.")(fn)
    fn = click.option("--in-place", is_flag=True, help="Replace each file atomically (temp file + rename).")(fn)
    fn = click.option("--output", "-o", default=None, help="Output file, directory or prefix (URI).")(fn)
    return fn


@contextlib.contextmanager
def json_failure(json_output: bool, done: Callable[[], dict[str, Any]] = dict) -> Iterator[None]:
    """With ``--json``, a failure prints its record (reason, message, exit code, what was done) on stdout."""
    try:
        yield
    except ModelferryError as exc:
        if json_output:
            sys.stdout.write(json.dumps({**failure_record(exc), **done()}, indent=1) + "\n")
        raise


def run_each(
    path: str,
    output: str | None,
    in_place: bool,
    json_output: bool,
    op: Callable[[WorkItem], files.FileResult | None],
) -> list[files.FileResult]:
    """Resolve locations, apply ``op`` to every file, print a summary."""
    if bool(output) == in_place:
        raise UsageError("give exactly one of --output and --in-place", hint="e.g. --output ./decrypted/ or --in-place")
    sync_settings = build_settings({})
    results: list[files.FileResult] = []
    with json_failure(json_output, lambda: {"files": [r.to_dict() for r in results]}):
        src = open_location(path, sync_settings, side="source")
        target_location: Location | None = open_location(output, sync_settings, side="target") if output else None
        sweep_local(target_location or src)
        try:
            for item in work_items(src, target_location, sync_settings):
                result = op(item)
                if result is not None:
                    results.append(result)
        finally:
            src.close()
            if target_location is not None:
                target_location.close()
    summary = {"status": "complete", "files": [r.to_dict() for r in results]}
    if json_output:
        sys.stdout.write(json.dumps(summary, indent=1) + "\n")
    else:
        log.info("done: %d files", len(results))
    return results


def workers_of(settings: EnigmaSettings) -> int:
    return settings.workers or default_workers()


@click.group("enigma", invoke_without_command=True)
@click.option(
    "--config", "config", default=None, help="OME-Agent config YAML: decrypt local_path in place (OCI Vault)."
)
@click.pass_context
def enigma_command(ctx: click.Context, config: str | None) -> None:
    """Envelope encryption of model files: AES-256-GCM chunks, data keys wrapped by a KMS.

    \b
    Examples:
      modelferry enigma encrypt ./llama -o ./llama-enc/ --key-file /etc/enigma/key
      modelferry enigma encrypt ./llama -o s3://bucket/llama-enc/ --provider aws --key-id alias/models
      modelferry enigma decrypt s3://bucket/llama-enc/ -o ./llama/
      modelferry enigma rewrap ./llama-enc --in-place --provider vault --key-id models
      modelferry enigma inspect ./llama-enc/model.safetensors
      modelferry enigma --config ome-agent.yaml
    """
    if ctx.invoked_subcommand is not None:
        if config:
            raise UsageError("--config runs the OME-Agent decryption; do not combine it with a subcommand")
        return
    if not config:
        click.echo(ctx.get_help())
        return
    ome = load_ome_config(config)
    if ome.disable_model_decryption:
        log.info("disable_model_decryption is set: nothing to do")
        return
    settings = ome.apply(build_enigma_settings({}))
    cache = ProviderCache(settings)
    try:
        run_each(ome.path, None, True, False, lambda item: _decrypt_item(item, cache, settings, skip_plain=True))
    finally:
        cache.close()


def _decrypt_item(
    item: WorkItem, cache: ProviderCache, settings: EnigmaSettings, *, skip_plain: bool
) -> files.FileResult | None:
    if skip_plain and files.encryption_of(item.source, cache) is None:
        log.info("%s is not encrypted: left as it is", item.source.describe)
        return None
    return files.decrypt(item.source, item.make_sink, cache, workers_of(settings))


@enigma_command.command("encrypt")
@click.argument("path_or_uri")
@output_options
@click.option("--chunk-size", type=int, default=None, help="Plaintext bytes per chunk [2 MiB].")
@key_options
def encrypt_command(
    path_or_uri: str, output: str | None, in_place: bool, json_output: bool, chunk_size: int | None, **kw: Any
) -> None:
    """Encrypt a file, directory or prefix (files already encrypted are skipped)."""
    settings = build_enigma_settings({**key_overrides(kw), "chunk_size": chunk_size})
    provider = make_provider(settings.provider, settings)

    def op(item: WorkItem) -> files.FileResult | None:
        if files.looks_encrypted(item.source):
            log.info("%s is already encrypted: skipped", item.source.describe)
            return None
        return files.encrypt(item.source, item.make_sink, provider, settings.chunk_size, workers_of(settings))

    try:
        run_each(path_or_uri, output, in_place, json_output, op)
    finally:
        provider.close()


@enigma_command.command("decrypt")
@click.argument("path_or_uri")
@output_options
@click.option("--skip-plain", is_flag=True, help="Leave files that are not encrypted as they are instead of failing.")
@key_options
def decrypt_command(
    path_or_uri: str, output: str | None, in_place: bool, json_output: bool, skip_plain: bool, **kw: Any
) -> None:
    """Decrypt; each output appears only after all its chunks authenticated."""
    settings = build_enigma_settings(key_overrides(kw))
    cache = ProviderCache(settings)
    try:
        run_each(
            path_or_uri,
            output,
            in_place,
            json_output,
            lambda item: _decrypt_item(item, cache, settings, skip_plain=skip_plain),
        )
    finally:
        cache.close()


@enigma_command.command("rewrap")
@click.argument("path_or_uri")
@output_options
@key_options
def rewrap_command(path_or_uri: str, output: str | None, in_place: bool, json_output: bool, **kw: Any) -> None:
    """Wrap data keys under the newest key version (after rotation), or move them to --provider.

    The weights are not re-encrypted: only the header changes.
    """
    settings = build_enigma_settings(key_overrides(kw))
    cache = ProviderCache(settings)
    target = make_provider(settings.provider, settings) if kw.get("provider") else None
    try:
        run_each(
            path_or_uri,
            output,
            in_place,
            json_output,
            lambda item: files.rewrap(item.source, item.make_sink, cache, target),
        )
    finally:
        cache.close()
        if target is not None:
            target.close()


@enigma_command.command("inspect")
@click.argument("path_or_uri")
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
def inspect_command(path_or_uri: str, json_output: bool) -> None:
    """Show the header of encrypted files (provider, key id, sizes); needs no key."""
    sync_settings = build_settings({})
    out: list[dict[str, Any]] = []
    with json_failure(json_output):
        src = open_location(path_or_uri, sync_settings, side="source")
        try:
            for item in work_items(src, None, sync_settings, need_output=False):
                if files.looks_encrypted(item.source):
                    out.append(files.inspect(item.source))
                else:
                    out.append({"path": item.source.describe, "encrypted": False, "size": item.source.size})
        finally:
            src.close()
    if json_output:
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
        return
    for doc in out:
        if doc.get("encrypted") is False:
            click.echo(f"{doc['path']}: not encrypted ({doc['size']} bytes)")
        else:
            click.echo(
                f"{doc['path']}: {doc['algorithm']} v{doc['format_version']}, {doc['plaintext_size']} bytes in "
                f"{doc['chunks']} chunks of {doc['chunk_size']}, {doc['provider']} key {doc['key_id']}"
            )
