"""``modelferry sample``: a self-contained first run against an embedded S3 server."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import click

from modelferry.settings import MiB, TransferSettings


@click.command("sample")
@click.option(
    "--size-mb", type=click.IntRange(1, 4096), default=50, show_default=True, help="Size of the sample model."
)
@click.option(
    "--keep",
    is_flag=True,
    help="Keep the files and the S3 server running (until Ctrl-C) to try other commands against it.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the model and its copy [a temporary directory].",
)
@click.option("--concurrency", type=click.IntRange(1, 256), default=8, show_default=True, help="Connections in flight.")
@click.option("--json", "json_output", is_flag=True, help="Print the summary as JSON.")
def sample_command(size_mb: int, keep: bool, workdir: Path | None, concurrency: int, json_output: bool) -> int:
    """Generate a small model and copy it local -> S3 -> local, verified, on loopback only.

    \b
    Examples:
      modelferry sample
      modelferry sample --size-mb 500 --keep
    """
    from modelferry.sample import SAMPLE_KEY_ID, SAMPLE_SECRET, EmbeddedS3, run_sample

    transfer = TransferSettings(concurrency=concurrency, part_size=8 * MiB, size_limit=None)
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="modelferry-sample-")) if workdir is None else workdir
    s3 = EmbeddedS3()
    try:
        report = run_sample(root, s3, size_mb=size_mb, transfer=transfer)
        summary = report.to_dict()
        if json_output:
            sys.stdout.write(json.dumps(summary, indent=1) + "\n")
        else:
            click.echo(
                f"sample model   {report.source_dir} ({len(report.files)} files, {summary['bytes'] / 1e6:.1f} MB)"
            )
            for rel, size in sorted(report.files.items()):
                click.echo(f"  {size:>12}  {rel}")
            for leg, target in (("upload", report.bucket_uri), ("download", report.copy_dir)):
                stats = summary[leg]
                click.echo(
                    f"{leg:<14} -> {target}: {stats['files_copied']} files, {stats['bytes_copied']} bytes, "
                    f"{stats['elapsed_s']:.2f}s, {stats['rate_mb_s']:.1f} MB/s"
                )
            click.echo(f"manifests      {report.manifest}")
            click.echo("verified       every file matches its original byte for byte (sha256 checked while copying)")
        if keep:
            click.echo(
                f"\nS3 server kept at {s3.endpoint} (Ctrl-C to stop). Try:\n"
                f"  AWS_ENDPOINT_URL={s3.endpoint} AWS_ACCESS_KEY_ID={SAMPLE_KEY_ID} "
                f"AWS_SECRET_ACCESS_KEY={SAMPLE_SECRET} modelferry sync {report.bucket_uri} ./another-copy",
                err=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
    finally:
        s3.stop()
        if own_dir and not keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0
