"""``modelferry sync SOURCE TARGET``."""

from __future__ import annotations

import gc
import logging
from typing import Any

import click

from modelferry.backends import backend_for
from modelferry.backends.registry import CliOption, cli_options
from modelferry.backends.registry import overrides as backend_overrides
from modelferry.cli.dataplane import (
    build_settings,
    cancel_on_signals,
    progress_for,
)
from modelferry.cli.outcome import report_failure, report_plan, report_summary
from modelferry.errors import ModelferryError
from modelferry.settings import SyncSettings, TransferSettings, shown_default
from modelferry.storage import open_store
from modelferry.transfer.plan import SyncOptions
from modelferry.transfer.sync import SyncResult, sync
from modelferry.units import parse_size
from modelferry.uri import parse_uri

log = logging.getLogger("modelferry.sync")


FLAGS = {  # dotted setting -> the option that sets it, named in validation errors
    "transfer.concurrency": "--concurrency",
    "transfer.part_size": "--part-size",
    "transfer.size_limit": "--size-limit",
    "transfer.retries": "--retries",
}


def _click_option(option: CliOption) -> Any:
    if option.is_flag:
        return click.option(option.flag, is_flag=True, default=None, help=option.help)
    kind = click.Choice(list(option.choices)) if option.choices else None
    return click.option(option.flag, type=kind, default=None, help=option.help)


def credential_options(fn: Any) -> Any:
    """Credential options shared by sync-like commands: each storage backend's (modelferry.backends), then
    trust. Each has a MODELFERRY_* variable too."""
    options = [
        *(_click_option(option) for option in cli_options()),
        click.option(
            "--no-verify-tls",
            is_flag=True,
            default=None,
            help="Do not verify TLS certificates (a test endpoint only; env MODELFERRY_TLS__VERIFY=false).",
        ),
        click.option(
            "--ca-bundle",
            default=None,
            help="PEM CA bundle file or directory trusted by every HTTPS client: S3, Hub, IAM, Oracle "
            "(env MODELFERRY_TLS__CA_BUNDLE; AWS_CA_BUNDLE, REQUESTS_CA_BUNDLE, SSL_CERT_FILE).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def overrides_from(kw: dict[str, Any]) -> dict[str, Any]:
    return {
        **backend_overrides(kw),
        "tls.ca_bundle": kw.get("ca_bundle"),
        "tls.verify": False if kw.get("no_verify_tls") else None,
    }


def run_sync(
    settings: SyncSettings,
    source: str,
    target: str,
    *,
    revision: str | None = None,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    dry_run: bool = False,
    json_output: bool = False,
    quiet: bool = False,
    decrypt: bool = False,
    follow_symlinks: bool = False,
) -> SyncResult:
    """Open both stores, run the engine, report. Raises ModelferryError on failure."""
    src_uri = parse_uri(source, revision=revision)
    target_uri = parse_uri(target)
    if not backend_for(target_uri.scheme).can_be_target:
        raise ModelferryError(f"{target_uri.scheme}:// cannot be a target", hint="Sync to a directory or a bucket")
    src = open_store(src_uri, settings.source, settings=settings, follow_symlinks=follow_symlinks)
    if decrypt:  # enigma: serve plaintext of encrypted files; keys from MODELFERRY_ENIGMA__*
        from modelferry.enigma.decrypting import decrypting_source

        src = decrypting_source(src)
    target_store = open_store(target_uri, settings.target, settings=settings)
    log.info("sync %s -> %s", src.describe(), target_store.describe())
    # Everything imported so far lives as long as the process: keep the cyclic collector from
    # walking it again and again while the transfer allocates chunk after chunk.
    gc.freeze()
    try:
        with cancel_on_signals() as cancel:
            return sync(
                src,
                target_store,
                settings.transfer,
                SyncOptions(include=include, exclude=exclude, dry_run=dry_run),
                progress=progress_for(json_output, settings.progress_interval, quiet),
                cancel=cancel,
            )
    finally:
        src.close()
        target_store.close()


@click.command("sync")
@click.argument("source")
@click.argument("target")
@click.option("--revision", default=None, help="Hub branch, tag or commit (pinned to a commit sha once).")
@click.option(
    "--include",
    "--allow-pattern",
    "include",
    multiple=True,
    help="Only files matching this glob (repeatable).",
)
@click.option(
    "--exclude",
    "--ignore-pattern",
    "exclude",
    multiple=True,
    help="Skip files matching this glob (repeatable).",
)
@click.option(
    "--concurrency",
    type=int,
    default=None,
    help=f"Connections in flight across and within files [{shown_default(TransferSettings, 'concurrency')}].",
)
@click.option(
    "--part-size",
    default=None,
    help=f"Bytes per ranged GET / multipart part [{shown_default(TransferSettings, 'part_size')}].",
)
@click.option(
    "--size-limit",
    default=None,
    help=f"Refuse sources larger than this; 0 switches it off [{shown_default(TransferSettings, 'size_limit')}].",
)
@click.option(
    "--retries", type=int, default=None, help=f"Retries per part [{shown_default(TransferSettings, 'retries')}]."
)
@click.option(
    "--speed-limit",
    default=None,
    help="Low-speed limit per second, e.g. 10KiB (like curl): slower for --speed-time is retried, then fails; 0: off.",
)
@click.option(
    "--speed-time",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds the transfer may stay under --speed-limit [60].",
)
@click.option(
    "--trust-size",
    is_flag=True,
    default=None,
    help="Skip target files of equal size without a checksum.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; move nothing.")
@click.option(
    "--decrypt",
    is_flag=True,
    help="Decrypt enigma-encrypted files while copying (keys: MODELFERRY_ENIGMA__*).",
)
@click.option(
    "--follow-symlinks",
    is_flag=True,
    help="Local source: also follow links that lead outside it (by default only links inside are followed).",
)
@click.option("--json", "json_output", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("--termination-log", default=None, help="Where to write the Kubernetes termination message.")
@credential_options
def sync_command(
    source: str,
    target: str,
    revision: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    concurrency: int | None,
    part_size: str | None,
    size_limit: str | None,
    retries: int | None,
    speed_limit: str | None,
    speed_time: float | None,
    trust_size: bool | None,
    dry_run: bool,
    decrypt: bool,
    follow_symlinks: bool,
    json_output: bool,
    termination_log: str | None,
    **creds: Any,
) -> int:
    """Copy SOURCE to TARGET, verified, resumable and atomic.

    \b
    Examples:
      modelferry sync hf://Qwen/Qwen2.5-0.5B ./models/qwen
      modelferry sync hf://org/model@v1.0 s3://bucket/models/
      modelferry sync s3://src/models/llama s3://dst/models/llama
      modelferry sync oci://n/ns/b/bucket/o/llama /mnt/models/llama
    """
    try:
        limit, part_bytes = parse_size(size_limit), parse_size(part_size)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    overrides: dict[str, Any] = {
        "transfer.concurrency": concurrency,
        "transfer.part_size": part_bytes,
        "transfer.size_limit": (limit or None) if size_limit is not None else None,
        "transfer.retries": retries,
        "transfer.speed_limit": parse_size(speed_limit),
        "transfer.speed_time": speed_time,
        "transfer.trust_size": trust_size,
        "termination_log": termination_log,
        **overrides_from(creds),
    }
    settings = build_settings(overrides, FLAGS)
    if size_limit is not None and not limit:
        settings.transfer.size_limit = None
    try:
        result = run_sync(
            settings,
            source,
            target,
            revision=revision,
            include=include,
            exclude=exclude,
            dry_run=dry_run,
            json_output=json_output,
            decrypt=decrypt,
            follow_symlinks=follow_symlinks,
        )
    except ModelferryError as exc:
        report_failure(settings.termination_log, exc, json_output=json_output)
        raise
    summary = result.to_dict(plan_items=False)
    if dry_run:
        report_plan(settings.termination_log, summary, result.plan.item_dicts(), json_output=json_output)
    else:
        report_summary(settings.termination_log, summary, json_output=json_output)
    if json_output:
        return 0
    if dry_run:
        for item in result.plan:
            click.echo(
                f"{item.action:5} {item.source.size:>14}  {item.source.path}  ({item.reason}; verify {item.expected.strength})"
            )
        click.echo(
            f"{result.plan.count()} files, {result.plan.total_bytes} bytes; {result.plan.copy_bytes} bytes to copy"
        )
    else:
        log.info(
            "done: %d copied (%d bytes), %d skipped, %.2fs, %.1f MB/s",
            result.files_copied,
            result.bytes_copied,
            result.files_skipped,
            result.elapsed_s,
            summary["rate_mb_s"],
        )
    return 0
