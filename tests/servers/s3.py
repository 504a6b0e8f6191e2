"""moto S3 servers on 127.0.0.1 for tests (and the helpers tests use with them).

Two ``ThreadedMotoServer`` instances on two ephemeral ports give two endpoints,
so "two stores" really streams between two HTTP endpoints. moto keeps its state
per process, so both endpoints see the same buckets: tests use distinct bucket
names per side. ``reset`` wipes all state (POST /moto-api/reset).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

ACCESS_KEY = "testing"
SECRET_KEY = "testing-secret"


@dataclass
class MotoS3:
    """One running moto server."""

    server: Any
    endpoint: str

    def post(self, path: str, data: bytes = b"") -> dict[str, Any]:
        req = urllib.request.Request(
            self.endpoint + path, data=data, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:  # loopback only
            body = resp.read()
        return json.loads(body) if body else {}

    def reset(self) -> None:
        """Forget every bucket and object (and switch auth enforcement off)."""
        self.post("/moto-api/reset-auth", b"inf")
        self.post("/moto-api/reset")

    def enforce_auth(self) -> None:
        """From now on, requests need a key moto's IAM knows (unknown keys get 403)."""
        self.post("/moto-api/reset-auth", b"0")

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
        )

    def create_bucket(self, name: str) -> Any:
        client = self.client()
        client.create_bucket(Bucket=name)
        return client

    def stop(self) -> None:
        self.server.stop()


def start_moto() -> MotoS3:
    """Start a moto server on an ephemeral loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return MotoS3(server=server, endpoint=f"http://{host}:{port}")


def list_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def upload_multipart(client: Any, bucket: str, key: str, data: bytes, part_size: int) -> str:
    """Upload ``data`` with fixed-size parts (as another tool would); returns the ETag."""
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for n, off in enumerate(range(0, len(data), part_size), start=1):
        resp = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=data[off : off + part_size]
        )
        parts.append({"PartNumber": n, "ETag": resp["ETag"]})
    resp = client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    return str(resp["ETag"]).strip('"')


def iter_servers(count: int) -> Iterator[MotoS3]:
    """Start ``count`` servers (used by session fixtures)."""
    for _ in range(count):
        yield start_moto()


_shared: list[MotoS3] = []


def shared_servers() -> list[MotoS3]:
    """Two servers started once per test process (stopped at exit with the process: daemon threads)."""
    if not _shared:
        _shared.extend(iter_servers(2))
    return _shared
