"""Moving the run's inputs in and its outputs out, through the sync engine (verified, resumable)."""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import replace
from pathlib import Path

from modelferry.errors import NotFoundError
from modelferry.settings import Credentials, TransferSettings
from modelferry.storage import open_store
from modelferry.transfer.plan import SyncOptions
from modelferry.transfer.progress import Progress
from modelferry.transfer.sync import SyncResult, sync
from modelferry.uri import StorageURI, parse_uri

log = logging.getLogger("modelferry.sidecar.staging")

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def copy_tree(
    source: StorageURI,
    target: StorageURI,
    source_creds: Credentials,
    target_creds: Credentials,
    transfer: TransferSettings,
    *,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> SyncResult:
    """One sync from ``source`` to ``target``; the manifest is written last."""
    src = open_store(source, source_creds, transfer=transfer)
    target_store = open_store(target, target_creds, transfer=transfer)
    try:
        options = SyncOptions(include=include, exclude=exclude)
        return sync(src, target_store, transfer, options, progress=Progress(mode="log", interval=10.0))
    finally:
        src.close()
        target_store.close()


def stage(uri: str, target_dir: Path, creds: Credentials, transfer: TransferSettings) -> SyncResult:
    """Stage a model or dataset URI (a directory/prefix, or one file) into the directory ``target_dir``."""
    log.info("staging %s -> %s", uri, target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    source = parse_uri(uri)
    target = parse_uri(str(target_dir.resolve()))
    if source.scheme == "file" and Path(source.path).is_file():
        single = Path(source.path)
        return copy_tree(parse_uri(str(single.parent)), target, creds, Credentials(), transfer, include=(single.name,))
    try:
        result = copy_tree(source, target, creds, Credentials(), transfer)
    except NotFoundError:
        result = None
    if (result is None or not result.plan.items) and source.is_bucket and source.prefix:
        # s3://bucket/data/train.jsonl names one object: list its parent, take only that name.
        parent, _, name = source.prefix.rpartition("/")
        return copy_tree(replace(source, prefix=parent), target, creds, Credentials(), transfer, include=(name,))
    if result is None:
        raise NotFoundError(f"nothing to stage at {uri}", obj=uri, hint="Check the URI and its credentials")
    return result


def upload(local: Path, uri: str, creds: Credentials, transfer: TransferSettings) -> SyncResult:
    """Upload a local directory to ``uri``; checkpoints stay behind (the final result is what ships)."""
    log.info("uploading %s -> %s", local, uri)
    return copy_tree(
        parse_uri(str(local.resolve())), parse_uri(uri), Credentials(), creds, transfer, exclude=("checkpoints/",)
    )


def failed_uri(output_uri: str) -> str:
    """``<output>/failed``: where logs and partial results of a failed run go."""
    return str(parse_uri(output_uri).child("failed"))


def last_checkpoint(output: Path) -> Path | None:
    """The ``checkpoint-N`` directory with the highest N below ``output``, if any."""
    best: tuple[int, Path] | None = None
    if not output.is_dir():
        return None
    for path in output.rglob("checkpoint-*"):
        m = CHECKPOINT.match(path.name)
        if m and path.is_dir() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), path)
    return best[1] if best else None


def collect_failed(workspace_ctl: Path, files: list[Path], checkpoint: Path | None) -> Path:
    """A directory holding what a failed run leaves for a human: logs, metrics, last checkpoint."""
    out = workspace_ctl / "failed"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for f in files:
        if f.is_file():
            shutil.copy2(f, out / f.name)
    if checkpoint is not None:
        shutil.copytree(checkpoint, out / checkpoint.name)
    return out
