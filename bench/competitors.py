"""The tools modelferry is compared with, each run in its own process by sync_bench.py.

``hf``: ``huggingface_hub.snapshot_download`` into a local directory (its defaults: 8 workers,
one connection per file, no sha256 check). ``s3``: boto3's TransferManager downloading every
object of the prefix at once with its default configuration (10 threads, 8 MiB ranged parts),
which is what ``aws s3 sync`` does, unsigned and path-style against the local endpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path


def hub(endpoint: str, target: Path) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download("bench/model", endpoint=endpoint, local_dir=target)


def s3(endpoint: str, target: Path) -> None:
    import boto3
    from boto3.s3.transfer import TransferConfig, create_transfer_manager
    from botocore import UNSIGNED
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(
            signature_version=UNSIGNED,
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="bench", Prefix="model/")["Contents"]]
    with create_transfer_manager(client, TransferConfig()) as manager:
        futures = []
        for key in keys:
            target_path = target / key.removeprefix("model/")
            target_path.parent.mkdir(parents=True, exist_ok=True)
            futures.append(manager.download("bench", key, str(target_path)))
        for future in futures:
            future.result()


if __name__ == "__main__":
    kind, url, target_path = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    {"hf": hub, "s3": s3}[kind](url, target_path)
