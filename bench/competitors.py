"""The tools modelferry is compared with, each run in its own process by sync_bench.py.

``hf``: ``huggingface_hub.snapshot_download`` into a local directory (its defaults: 8 workers,
one connection per file, no sha256 check). ``s3``: boto3's TransferManager downloading every
object of the prefix at once with its default configuration (10 threads, 8 MiB ranged parts),
which is what ``aws s3 sync`` does, unsigned and path-style against the local endpoint.
``s3-upload``: the same TransferManager uploading every file of a directory under a prefix
(``upload_file`` for each, all at once: 10 threads, multipart above 8 MiB in 8 MiB parts), signed
with the credentials in the environment.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def hub(endpoint: str, target: Path) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download("bench/model", endpoint=endpoint, local_dir=target)


def _client(endpoint: str, *, signed: bool) -> Any:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4" if signed else UNSIGNED,
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def s3(endpoint: str, target: Path) -> None:
    from boto3.s3.transfer import TransferConfig, create_transfer_manager

    client = _client(endpoint, signed=False)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="bench", Prefix="model/")["Contents"]]
    with create_transfer_manager(client, TransferConfig()) as manager:
        futures = []
        for key in keys:
            target_path = target / key.removeprefix("model/")
            target_path.parent.mkdir(parents=True, exist_ok=True)
            futures.append(manager.download("bench", key, str(target_path)))
        for future in futures:
            future.result()


def s3_upload(endpoint: str, source: Path, bucket: str, prefix: str) -> None:
    from boto3.s3.transfer import TransferConfig, create_transfer_manager

    client = _client(endpoint, signed=True)
    files = sorted(p for p in source.rglob("*") if p.is_file())
    with create_transfer_manager(client, TransferConfig()) as manager:
        futures = [manager.upload(str(f), bucket, f"{prefix}/{f.relative_to(source).as_posix()}") for f in files]
        for future in futures:
            future.result()


if __name__ == "__main__":
    kind, url = sys.argv[1], sys.argv[2]
    if kind == "s3-upload":
        s3_upload(url, Path(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        {"hf": hub, "s3": s3}[kind](url, Path(sys.argv[3]))
