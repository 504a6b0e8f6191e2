"""``modelferry upload PATH...``: local files into a namespace's data connection, flat under ``models/``.

Replaces the proof-of-concept's ``upload.sh`` (podman + s3cmd): it reads the data connection Secret
with the user's kubeconfig, uploads through the engine (verified, resumable, progress bar) and, with
``--complete``, applies the manual-upload-complete ``model-source`` Secret so ``synchronize-model``
completes.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr

from modelferry.cli.runtime import cancel_on_signals, progress_for
from modelferry.errors import NotFoundError, UsageError
from modelferry.logs import register_secret
from modelferry.settings import S3Credentials, SyncSettings, TransferSettings, shown_default
from modelferry.transfer.plan import SyncOptions

log = logging.getLogger("modelferry.upload")


def destination_from_secret(name: str, values: dict[str, str]) -> tuple[S3Credentials, str]:
    """S3 credentials and bucket from an OpenShift AI S3 data connection's values (pure)."""
    missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_S3_BUCKET") if not values.get(k)]
    if missing:
        raise UsageError(
            f"data connection {name!r} lacks {', '.join(missing)}",
            hint="Pick the right Secret with --data-connection, or add the keys to it",
        )
    for key in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        register_secret(values.get(key))
    creds = S3Credentials(
        endpoint_url=values.get("AWS_S3_ENDPOINT") or None,
        region=values.get("AWS_DEFAULT_REGION") or None,
        access_key_id=values["AWS_ACCESS_KEY_ID"],
        secret_access_key=SecretStr(values["AWS_SECRET_ACCESS_KEY"]),
    )
    return creds, values["AWS_S3_BUCKET"]


def complete_secret(namespace: str, name: str) -> dict[str, Any]:
    """The manual-upload-complete model-source Secret (pure)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "modelferry"}},
        "type": "Opaque",
        "stringData": {"S3_SYNC_LOCAL_UPLOAD_COMPLETE": "true"},
    }


async def _kube_io(
    kubeconfig: str | None, api_url: str | None, namespace: str, data_connection: str, apply: dict[str, Any] | None
) -> dict[str, str]:
    try:
        from controller.kube.client import SECRETS, Kube, build_api_client
        from controller.operator.jobs import secret_data
    except ImportError as exc:  # kubernetes-asyncio is in the [controller] extra
        raise UsageError(
            f"modelferry upload needs the Kubernetes client ({exc.name})", hint="pip install 'modelferry[controller]'"
        ) from exc

    kube = Kube(await build_api_client(kubeconfig=kubeconfig, api_url=api_url))
    try:
        values: dict[str, str] = {}
        if data_connection:
            secret = await kube.get(SECRETS, namespace, data_connection)
            if secret is None:
                raise NotFoundError(
                    f"data connection Secret {data_connection!r} not found in namespace {namespace!r}",
                    hint="Check --namespace and --data-connection (oc get secrets -n NAMESPACE)",
                )
            values = secret_data(secret)
        if apply is not None:
            name = apply["metadata"]["name"]
            existing = await kube.get(SECRETS, namespace, name)
            if existing is None:
                await kube.create(SECRETS, namespace, apply)
            else:
                apply["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                await kube.replace(SECRETS, namespace, name, apply)
        return values
    finally:
        await kube.close()


def stage_links(paths: tuple[str, ...], staging: Path) -> None:
    """Mirror several PATHs into one tree of symlinks, so one sync (and one manifest) covers them all.

    A directory contributes its contents, a file itself; two sources of one name are refused.
    """
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if path.is_file():
            pairs = [(path, path.name)]
        elif path.is_dir():
            pairs = [(f, f.relative_to(path).as_posix()) for f in sorted(path.rglob("*")) if f.is_file()]
        else:
            raise UsageError(f"{raw!r} is neither a file nor a directory", hint="Give paths to model files or folders")
        for source, rel in pairs:
            link = staging / rel
            if link.exists() or link.is_symlink():
                raise UsageError(f"two inputs would both upload {rel!r}", hint="Upload them to different prefixes")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)


def upload_paths(
    paths: tuple[str, ...], creds: S3Credentials, bucket: str, prefix: str, settings: SyncSettings
) -> dict[str, Any]:
    """Upload PATHs flat under ``s3://bucket/prefix`` in one verified, resumable sync."""
    import tempfile

    from modelferry.storage import open_store
    from modelferry.storage.local import LocalStore
    from modelferry.transfer.sync import sync
    from modelferry.uri import parse_uri

    target_uri = parse_uri(f"s3://{bucket}/{prefix.strip('/')}")
    settings.target.s3 = creds
    with tempfile.TemporaryDirectory(prefix="modelferry-upload-") as tmp:
        single = Path(paths[0]).expanduser().resolve() if len(paths) == 1 else None
        if single is not None and single.is_dir():
            root = single
        else:
            root = Path(tmp)
            stage_links(paths, root)
        source = LocalStore(parse_uri(str(root)), root)
        target = open_store(target_uri, settings.target, settings=settings)
        log.info("upload %s -> %s", ", ".join(paths), target_uri)
        try:
            with cancel_on_signals() as cancel:
                result = sync(
                    source,
                    target,
                    settings.transfer,
                    SyncOptions(),
                    progress=progress_for(False, settings.progress_interval),
                    cancel=cancel,
                )
        finally:
            source.close()
            target.close()
    return result.to_dict()


@click.command("upload")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--namespace", "-n", default="demo", show_default=True, help="Namespace of the data connection.")
@click.option("--data-connection", default="demo-models", show_default=True, help="The S3 data connection Secret.")
@click.option("--prefix", default="models/", show_default=True, help="Prefix in the bucket (flat).")
@click.option("--complete", is_flag=True, help="Afterwards apply the manual-upload-complete model-source Secret.")
@click.option("--model-source-secret", default="model-source", show_default=True, help="Name of that Secret.")
@click.option("--kubeconfig", default=None, help="Kubeconfig file [KUBECONFIG or ~/.kube/config].")
@click.option("--api-url", default=None, hidden=True, help="API server URL without authentication (tests).")
@click.option("--endpoint", default=None, help="Override the data connection's AWS_S3_ENDPOINT (e.g. a route).")
@click.option("--no-verify-tls", is_flag=True, help="Do not verify the endpoint's TLS certificate.")
@click.option(
    "--ca-bundle", default=None, help="PEM CA bundle file or directory for the endpoint [MODELFERRY_TLS__CA_BUNDLE]."
)
@click.option(
    "--concurrency",
    type=int,
    default=None,
    help=f"Connections in flight [{shown_default(TransferSettings, 'concurrency')}].",
)
def upload_command(
    paths: tuple[str, ...],
    namespace: str,
    data_connection: str,
    prefix: str,
    complete: bool,
    model_source_secret: str,
    kubeconfig: str | None,
    api_url: str | None,
    endpoint: str | None,
    no_verify_tls: bool,
    ca_bundle: str | None,
    concurrency: int | None,
) -> int:
    """Upload PATHS flat under models/ of a namespace's data connection.

    \b
    Examples:
      modelferry upload ./aligned-model/ --namespace demo
      modelferry upload ./aligned-model/ --complete
      modelferry upload --complete          # files are already there
    """
    if not paths and not complete:
        raise UsageError("nothing to do", hint="Give paths to upload, --complete, or both")
    settings = SyncSettings()
    if ca_bundle:
        settings.tls.ca_bundle = ca_bundle
    if no_verify_tls:
        settings.tls.verify = False
    if concurrency:
        settings.transfer.concurrency = concurrency
    values = asyncio.run(_kube_io(kubeconfig, api_url, namespace, data_connection if paths else "", None))
    if paths:
        creds, bucket = destination_from_secret(data_connection, values)
        if endpoint:
            creds.endpoint_url = endpoint
        summary = upload_paths(paths, creds, bucket, prefix, settings)
        click.echo(
            f"uploaded {summary['files_copied']} files ({summary['bytes_copied']} bytes), "
            f"{summary['files_skipped']} already there -> s3://{bucket}/{prefix.strip('/')}/"
        )
    if complete:
        asyncio.run(_kube_io(kubeconfig, api_url, namespace, "", complete_secret(namespace, model_source_secret)))
        click.echo(f"applied Secret {namespace}/{model_source_secret} (S3_SYNC_LOCAL_UPLOAD_COMPLETE=true)")
    return 0
