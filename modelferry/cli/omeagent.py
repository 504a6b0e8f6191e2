"""OME-Agent compatible subcommands: ``modelferry hf-download`` and ``modelferry replica``.

Both read an OME-Agent YAML file (``--config``) and ``OME_AGENT_*`` variables,
translate them (see :mod:`modelferry.omeagent.translate`) and run the same
engine as ``modelferry sync``: verified, resumable, atomic, manifest last.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from modelferry.cli.dataplane import build_settings
from modelferry.cli.outcome import report_failure, report_summary
from modelferry.cli.sync import run_sync
from modelferry.errors import ModelferryError
from modelferry.logs import setup_logging
from modelferry.omeagent.config import load_ome_config
from modelferry.omeagent.keys import HF_DOWNLOAD, REPLICA
from modelferry.omeagent.translate import SyncJob, hf_download_job, replica_job
from modelferry.settings import SyncSettings

log = logging.getLogger("modelferry.omeagent")


def _common(fn: Any) -> Any:
    options = [
        click.option(
            "--config",
            "config_path",
            type=click.Path(dir_okay=False),
            default=None,
            help="OME-Agent YAML config file (OME_AGENT_* variables override it).",
        ),
        click.option("--debug", is_flag=True, help="Debug logging (as OME-Agent's --debug)."),
        click.option("--dry-run", is_flag=True, help="Print the plan; move nothing."),
        click.option("--json", "json_output", is_flag=True, help="Print a JSON summary on stdout."),
        click.option("--termination-log", default=None, help="Where to write the Kubernetes termination message."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _prepare(ctx: click.Context, debug: bool, config_path: str | None, subcommand: str) -> Any:
    if debug:
        setup_logging("debug", (ctx.obj or {}).get("log_format", "text"))
    config, report = load_ome_config(config_path, subcommand)
    report.warn()
    report.raise_for_unusable()
    for key, origin in sorted(report.set_keys.items()):
        log.debug("OME-Agent key %s from %s", key, origin)
    return config


def _execute(job: SyncJob, extra: dict[str, Any], *, dry_run: bool, json_output: bool) -> int:
    for warning in job.warnings:
        log.warning("%s", warning)
    settings: SyncSettings = build_settings({**job.overrides, **extra})
    try:
        result = run_sync(
            settings,
            job.source,
            job.target,
            revision=job.revision,
            dry_run=dry_run,
            json_output=json_output,
        )
    except ModelferryError as exc:
        # OME-Agent printed nothing on failure; keep stdout empty there.
        report_failure(settings.termination_log, exc, json_output=False)
        raise
    report_summary(settings.termination_log, result.to_dict(), json_output=json_output)
    if json_output:
        return 0
    if dry_run:
        for item in result.plan.items:
            click.echo(f"{item.action:5} {item.source.size:>14}  {item.source.path}  ({item.reason})")
    else:
        log.info(
            "done: %d copied (%d bytes), %d skipped, %.2fs",
            result.files_copied,
            result.bytes_copied,
            result.files_skipped,
            result.elapsed_s,
        )
    return 0


@click.command("hf-download")
@_common
@click.option("--hf-endpoint", default=None, help="Hub endpoint or mirror (env HF_ENDPOINT).")
@click.pass_context
def hf_download_command(
    ctx: click.Context,
    config_path: str | None,
    debug: bool,
    dry_run: bool,
    json_output: bool,
    termination_log: str | None,
    hf_endpoint: str | None,
) -> int:
    """Download a Hugging Face model as OME-Agent's hf-download does (keys: model_name, hf_token,
    local_path / model_store_directory, num_connections, skip_sha, max_retries, retry interval,
    download_size_limit_gb, enable_size_limit_check).

    \b
    Example:
      modelferry hf-download --config agent.yaml --debug
    """
    config = _prepare(ctx, debug, config_path, HF_DOWNLOAD)
    job = hf_download_job(config)
    extra = {"source.hf.endpoint": hf_endpoint, "termination_log": termination_log}
    return _execute(job, extra, dry_run=dry_run, json_output=json_output)


@click.command("replica")
@_common
@click.option("--oci-config", default=None, help="OCI config file for both buckets (default ~/.oci/config).")
@click.option("--source-endpoint", default=None, help="Object Storage endpoint override for the source.")
@click.option("--target-endpoint", default=None, help="Object Storage endpoint override for the target.")
@click.pass_context
def replica_command(
    ctx: click.Context,
    config_path: str | None,
    debug: bool,
    dry_run: bool,
    json_output: bool,
    termination_log: str | None,
    oci_config: str | None,
    source_endpoint: str | None,
    target_endpoint: str | None,
) -> int:
    """Replicate an OCI bucket prefix to another bucket, region or tenancy, as OME-Agent's replica does
    (keys: auth_type, profile, source.*, target.*, num_connections, max_retries, retry interval).

    \b
    Example:
      modelferry replica --config agent.yaml
    """
    config = _prepare(ctx, debug, config_path, REPLICA)
    job = replica_job(config)
    extra = {
        "source.oci.config_file": oci_config,
        "target.oci.config_file": oci_config,
        "source.oci.endpoint": source_endpoint,
        "target.oci.endpoint": target_endpoint,
        "termination_log": termination_log,
    }
    return _execute(job, extra, dry_run=dry_run, json_output=json_output)
