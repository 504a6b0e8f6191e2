"""``modelferry upload PATH...``: local files into a namespace's data connection, flat under ``models/``.

Replaces the proof-of-concept's ``upload.sh`` (podman + s3cmd): it reads the data connection Secret
with the user's kubeconfig, uploads through the engine (verified, resumable, progress bar) and, with
``--complete``, applies the manual-upload-complete ``model-source`` Secret so ``synchronize-model``
completes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from pydantic import SecretStr

from modelferry.cli.dataplane import cancel_on_signals, progress_for
from modelferry.errors import ModelferryError, NotFoundError, UsageError
from modelferry.logs import register_secret
from modelferry.settings import S3Credentials, SyncSettings, TransferSettings, shown_default
from modelferry.transfer.plan import SyncOptions

log = logging.getLogger("modelferry.upload")


def target_from_secret(name: str, values: dict[str, str]) -> tuple[S3Credentials, str]:
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


CLUSTER_SUFFIXES = (".svc", ".svc.cluster.local")


def cluster_service(endpoint: str) -> tuple[str, str] | None:
    """(service, namespace) when ``endpoint`` is an in-cluster Service address (``*.svc[.cluster.local]``)."""
    host = (urlsplit(endpoint if "://" in endpoint else f"//{endpoint}").hostname or "").rstrip(".")
    if not host.endswith(CLUSTER_SUFFIXES):
        return None
    parts = host.split(".")
    return (parts[0], parts[1]) if len(parts) >= 3 else None


def route_url(routes: list[dict[str, Any]], service: str) -> str | None:
    """The external URL of the Route that exposes ``service`` (TLS routes first), or None (pure)."""
    exposing = [
        r
        for r in routes
        if ((r.get("spec") or {}).get("to") or {}).get("name") == service
        and ((r.get("spec") or {}).get("to") or {}).get("kind", "Service") == "Service"
        and (r.get("spec") or {}).get("host")
    ]
    exposing.sort(key=lambda r: (not (r.get("spec") or {}).get("tls"), str((r.get("metadata") or {}).get("name"))))
    if not exposing:
        return None
    spec = exposing[0]["spec"]
    return f"{'https' if spec.get('tls') else 'http'}://{spec['host']}"


async def _wait_for_secret(kube: Any, namespace: str, name: str, wait: float) -> dict[str, Any]:
    """The data connection Secret, waiting up to ``wait`` seconds for the automation to create it."""
    from modelferry.controller.kube.client import SECRETS

    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    told = False
    while True:
        secret = await kube.get(SECRETS, namespace, name)
        if secret is not None:
            return dict(secret)
        left = deadline - loop.time()
        if left <= 0:
            raise NotFoundError(
                f"data connection Secret {name!r} not found in namespace {namespace!r}"
                + (f" after waiting {wait:g}s" if wait > 0 else ""),
                hint="Check --namespace and --data-connection (oc get secrets -n NAMESPACE), or wait longer (--wait)",
            )
        if not told:
            log.warning("waiting up to %gs for data connection %s/%s to appear", wait, namespace, name)
            told = True
        await asyncio.sleep(min(2.0, left))


async def _external_endpoint(kube: Any, endpoint: str) -> str:
    """An in-cluster endpoint replaced by the Route that exposes it (we run outside the cluster)."""
    from modelferry.controller.kube.client import Resource

    found = cluster_service(endpoint)
    if found is None:
        return endpoint
    service, namespace = found
    hint = "Pass --endpoint with the S3 route (oc get routes -A | grep s3)"
    try:
        routes, _ = await kube.list(Resource("route.openshift.io", "v1", "routes", "Route"), namespace)
    except ModelferryError as exc:
        raise UsageError(
            f"the data connection's endpoint {endpoint} works only inside the cluster, and its Routes in "
            f"{namespace!r} cannot be listed: {exc}",
            hint=hint,
        ) from exc
    url = route_url(routes, service)
    if url is None:
        raise UsageError(
            f"the data connection's endpoint {endpoint} works only inside the cluster, and no Route in "
            f"{namespace!r} exposes service {service!r}",
            hint=hint,
        )
    log.info("outside the cluster: using route %s instead of %s", url, endpoint)
    return url


async def _kube_io(
    kubeconfig: str | None,
    api_url: str | None,
    namespace: str,
    data_connection: str,
    apply: dict[str, Any] | None,
    *,
    wait: float = 0.0,
    outside: bool = False,
) -> dict[str, str]:
    try:
        from modelferry.controller.kube.client import SECRETS, Kube, build_api_client
        from modelferry.controller.workload.secrets import secret_data
    except ImportError as exc:  # kubernetes-asyncio is in the [controller] extra
        raise UsageError(
            f"modelferry upload needs the Kubernetes client ({exc.name})", hint="pip install 'modelferry[controller]'"
        ) from exc

    kube = Kube(await build_api_client(kubeconfig=kubeconfig, api_url=api_url))
    try:
        values: dict[str, str] = {}
        if data_connection:
            log.info("recovering data connection %s/%s", namespace, data_connection)
            values = secret_data(await _wait_for_secret(kube, namespace, data_connection, wait))
            if outside and values.get("AWS_S3_ENDPOINT"):
                values["AWS_S3_ENDPOINT"] = await _external_endpoint(kube, values["AWS_S3_ENDPOINT"])
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


def contents_only(raw: str) -> bool:
    """``upload.sh``'s rule (s3cmd's): ``dir/`` (or ``.``) uploads the directory's contents, ``dir`` the directory."""
    return raw.endswith("/") or raw.rstrip("/") in (".", "")


def stage_links(paths: tuple[str, ...], staging: Path) -> None:
    """Mirror several PATHs into one tree of symlinks, so one sync (and one manifest) covers them all.

    ``dir/`` contributes its contents, ``dir`` itself (under its name), a file itself; two sources
    of one name are refused.
    """
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if path.is_file():
            pairs = [(path, path.name)]
        elif path.is_dir():
            under = "" if contents_only(raw) else path.name + "/"
            pairs = [(f, under + f.relative_to(path).as_posix()) for f in sorted(path.rglob("*")) if f.is_file()]
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
        single = Path(paths[0]).expanduser().resolve() if len(paths) == 1 and contents_only(paths[0]) else None
        staged = single is None or not single.is_dir()
        root = single if single is not None and not staged else Path(tmp)
        if staged:
            stage_links(paths, root)
        # the staging tree's links are ours, to files the user named on the command line: follow them
        source = LocalStore(parse_uri(str(root)), root, follow_symlinks=staged)
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
@click.option(
    "--wait", type=float, default=300.0, show_default=True, help="Seconds to wait for the data connection to appear."
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
    wait: float,
) -> int:
    """Upload PATHS flat under models/ of a namespace's data connection.

    Like the proof-of-concept's upload.sh: `dir/` uploads the directory's contents
    straight under models/, `dir` uploads the directory itself (models/dir/...), a file
    goes to models/<name>. From outside the cluster an in-cluster endpoint
    (*.svc, *.svc.cluster.local) is replaced by the Route that exposes it.

    \b
    Examples:
      modelferry upload aligned-model/
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
    # Inside a pod the data connection's *.svc endpoint works; from a workstation it needs the route.
    outside = not endpoint and not os.environ.get("KUBERNETES_SERVICE_HOST")
    values = asyncio.run(
        _kube_io(kubeconfig, api_url, namespace, data_connection if paths else "", None, wait=wait, outside=outside)
    )
    if paths:
        creds, bucket = target_from_secret(data_connection, values)
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
