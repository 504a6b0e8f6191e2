"""The sample run behind ``modelferry sample``: a small model, an embedded S3, two verified syncs.

Everything stays on loopback: moto's S3 server runs in this process on an
ephemeral port of 127.0.0.1, the model is generated locally (valid safetensors
headers, random weights), and the real engine copies it local -> s3 -> local.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelferry.errors import IntegrityError, UsageError
from modelferry.settings import MiB, S3Credentials, TransferSettings
from modelferry.storage.local import LocalStore
from modelferry.storage.s3 import S3Store
from modelferry.transfer.sync import SyncResult, sync
from modelferry.uri import parse_uri

log = logging.getLogger(__name__)

SAMPLE_BUCKET = "sample-models"
SAMPLE_PREFIX = "tiny-llama"
SAMPLE_KEY_ID = "sample"
SAMPLE_SECRET = "sample-secret"  # noqa: S105 - moto accepts any key; this one only exists on loopback
SAMPLE_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": 1024,
    "torch_dtype": "float32",
}


def safetensors_bytes(tensors: dict[str, int], seed: bytes) -> bytes:
    """A valid safetensors file: little-endian header length, JSON header, F32 data (pseudo-random)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, count in tensors.items():
        header[name] = {"dtype": "F32", "shape": [count], "data_offsets": [offset, offset + 4 * count]}
        offset += 4 * count
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    return struct.pack("<Q", len(raw)) + raw + _noise(offset, seed)


def _noise(size: int, seed: bytes) -> bytes:
    # Fast, reproducible filler: one random MiB block repeated with a counter, so no two MiB are equal.
    block = os.urandom(MiB) if not seed else hashlib.sha256(seed).digest() * (MiB // 32)
    out = bytearray()
    n = 0
    while len(out) < size:
        out += n.to_bytes(8, "little") + block[8:]
        n += 1
    return bytes(out[:size])


def generate_sample_model(root: Path, total_bytes: int) -> dict[str, int]:
    """Write config.json, tokenizer.json, two safetensors shards and their index; returns sizes."""
    root.mkdir(parents=True, exist_ok=True)
    per_shard = max(1024, (total_bytes - 64 * 1024) // 2 // 4)  # F32 values per shard
    files: dict[str, bytes] = {
        "config.json": json.dumps(SAMPLE_CONFIG, indent=2).encode(),
        "tokenizer.json": json.dumps(
            {"version": "1.0", "model": {"type": "BPE", "vocab": {f"t{i}": i for i in range(1024)}, "merges": []}}
        ).encode(),
    }
    weight_map = {}
    for shard in (1, 2):
        name = f"model-{shard:05d}-of-00002.safetensors"
        tensor = f"model.layers.{shard - 1}.mlp.weight"
        files[name] = safetensors_bytes({tensor: per_shard}, seed=name.encode())
        weight_map[tensor] = name
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": 8 * per_shard}, "weight_map": weight_map}, indent=2
    ).encode()
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    return {rel: len(data) for rel, data in files.items()}


@dataclass
class SampleReport:
    """What the sample run did, for the summary."""

    endpoint: str
    source_dir: str
    bucket_uri: str
    copy_dir: str
    files: dict[str, int] = field(default_factory=dict)
    upload: dict[str, Any] = field(default_factory=dict)
    download: dict[str, Any] = field(default_factory=dict)
    manifest: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "complete",
            "endpoint": self.endpoint,
            "source_dir": self.source_dir,
            "bucket_uri": self.bucket_uri,
            "copy_dir": self.copy_dir,
            "files": self.files,
            "bytes": sum(self.files.values()),
            "upload": self.upload,
            "download": self.download,
            "manifest": self.manifest,
        }


class EmbeddedS3:
    """moto's S3 server on 127.0.0.1 (ephemeral port) in this process."""

    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise UsageError("the sample run needs moto's S3 server", hint="pip install 'modelferry[demo]'") from exc
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def credentials(self) -> S3Credentials:
        return S3Credentials(endpoint_url=self.endpoint, access_key_id=SAMPLE_KEY_ID, secret_access_key=SAMPLE_SECRET)

    def stop(self) -> None:
        self.server.stop()


def _leg(result: SyncResult) -> dict[str, Any]:
    summary = result.to_dict()
    return {k: summary[k] for k in ("files_copied", "bytes_copied", "elapsed_s", "rate_mb_s")}


def run_sample(workdir: Path, s3: EmbeddedS3, *, size_mb: int, transfer: TransferSettings) -> SampleReport:
    """Generate the model, sync local -> s3 -> local, and check the copy byte for byte."""
    source_dir, copy_dir = workdir / "model", workdir / "copy"
    sizes = generate_sample_model(source_dir, size_mb * 1_000_000)
    bucket_uri = f"s3://{SAMPLE_BUCKET}/{SAMPLE_PREFIX}"
    bucket = S3Store(parse_uri(bucket_uri), s3.credentials(), transfer)
    try:
        bucket.call("create_bucket", "", Bucket=SAMPLE_BUCKET)
        local = LocalStore(parse_uri(str(source_dir)), source_dir)
        up = sync(local, bucket, transfer)
        copy = LocalStore(parse_uri(str(copy_dir)), copy_dir)
        down = sync(bucket, copy, transfer)
    finally:
        bucket.close()
    for rel in sizes:
        if (source_dir / rel).read_bytes() != (copy_dir / rel).read_bytes():
            raise IntegrityError(f"the sample copy of {rel} differs from the original", obj=str(copy_dir / rel))
    return SampleReport(
        endpoint=s3.endpoint,
        source_dir=str(source_dir),
        bucket_uri=bucket_uri,
        copy_dir=str(copy_dir),
        files=sizes,
        upload=_leg(up),
        download=_leg(down),
        manifest=f"{bucket_uri}/.modelferry/manifest.json and {copy_dir}/.modelferry/manifest.json",
    )
