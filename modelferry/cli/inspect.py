"""``modelferry inspect PATH|URI``: model metadata from config.json and safetensors headers."""

from __future__ import annotations

import json
from typing import Any

import click

from modelferry.cli.dataplane import build_settings
from modelferry.cli.sync import credential_options, overrides_from
from modelferry.modelinfo import ModelMetadata, inspect_store
from modelferry.storage import open_store
from modelferry.uri import parse_uri


def render_text(where: str, meta: ModelMetadata) -> str:
    """A short human summary, one fact per line."""
    lines = [f"model:         {where}"]
    rows: list[tuple[str, Any]] = [
        ("architecture", meta.architecture),
        ("model type", meta.model_type),
        ("format", meta.format),
        ("framework", " ".join(meta.framework.values()) if meta.framework else None),
        ("parameters", f"{meta.parameter_size} ({meta.parameters:,})" if meta.parameters else None),
        ("context", meta.context_length),
        ("capabilities", ", ".join(meta.capabilities) if meta.capabilities else None),
        ("quantization", meta.quantization.label if meta.quantization else None),
        ("dtypes", ", ".join(f"{k}:{v:,}" for k, v in sorted(meta.dtypes.items())) if meta.dtypes else None),
        ("weights", _gib(meta.weights_bytes)),
        ("memory (est.)", _gib(meta.memory_estimate_bytes)),
        ("files", f"{meta.files} ({_gib(meta.total_bytes)})"),
    ]
    for label, value in rows:
        if value not in (None, ""):
            lines.append(f"{label + ':':<15}{value}")
    if not meta.has_config:
        lines.append("note:          no config.json found (or skipped)")
    return "\n".join(lines)


def _gib(value: int | None) -> str | None:
    if value is None:
        return None
    return f"{value / (1 << 30):.2f} GiB"


@click.command("inspect")
@click.argument("location")
@click.option("--revision", default=None, help="Hub branch, tag or commit.")
@click.option("--no-weights", is_flag=True, help="Read config.json only, not the safetensors headers.")
@click.option("--json", "json_output", is_flag=True, help="Print JSON (the ConfigMap entry's config).")
@credential_options
def inspect_command(location: str, revision: str | None, no_weights: bool, json_output: bool, **creds: Any) -> None:
    """Print model metadata for a local PATH or a URI (hf://, s3://, cos://, oci://).

    Reads config.json and only the headers of safetensors files (two ranged reads
    per file), so inspecting a 100 GB checkpoint in a bucket downloads kilobytes.

    \b
    Examples:
      modelferry inspect /mnt/models/llama-3-8b
      modelferry inspect hf://Qwen/Qwen2.5-0.5B --json
      modelferry inspect s3://bucket/models/mistral --source-endpoint http://minio:9000
    """
    settings = build_settings(overrides_from(creds))
    uri = parse_uri(location, revision=revision)
    store = open_store(uri, settings.source, settings=settings)
    try:
        store.resolve()
        meta = inspect_store(store, weights=not no_weights)
    finally:
        store.close()
    if json_output:
        click.echo(json.dumps({"uri": str(uri), **meta.to_dict()}, indent=2, sort_keys=True))
    else:
        click.echo(render_text(str(uri), meta))
