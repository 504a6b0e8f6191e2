"""Generate a benchmark model: safetensors shards of random bytes plus the documents servers need.

The shards are real safetensors files (an 8-byte little-endian header length, a JSON header
with dtype/shape/data_offsets, then the tensor bytes), filled with pseudo-random bytes so
nothing compresses. Beside the files it writes what a static web server needs to speak the
Hugging Face Hub protocol (the revision and tree API documents) and a ListObjectsV2 answer
for S3-style listing, plus the per-file checksums the nginx config adds as headers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

MiB = 1 << 20
GiB = 1 << 30
TENSOR_BYTES = 64 * MiB
WRITE_CHUNK = 16 * MiB
REPO = "bench/model"
BUCKET = "bench"
PREFIX = "model"
# A fixed fake commit sha: the Hub protocol pins every download to one.
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass(frozen=True)
class GeneratedFile:
    """One file of the generated model and its checksums."""

    path: str
    size: int
    sha256: str
    md5: str
    git_sha1: str
    lfs: bool


def safetensors_header(size: int) -> tuple[bytes, int]:
    """The header of a shard holding about ``size`` bytes of F16 tensors; returns (header, data bytes)."""
    tensors: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset, n = 0, 0
    while offset < size:
        nbytes = min(TENSOR_BYTES, size - offset)
        nbytes -= nbytes % 2  # F16 elements are two bytes
        if nbytes <= 0:
            break
        tensors[f"layers.{n}.weight"] = {
            "dtype": "F16",
            "shape": [nbytes // 2],
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
        n += 1
    raw = json.dumps(tensors, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8-byte alignment
    return struct.pack("<Q", len(raw)) + raw, offset


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def write_shard(path: Path, size: int, seed: int) -> GeneratedFile:
    """Write one shard of ``size`` data bytes; hash it on the way."""
    header, data_bytes = safetensors_header(size)
    rng = random.Random(seed)
    sha, md5 = hashlib.sha256(header), hashlib.md5(header)
    with open(path, "wb") as fh:
        fh.write(header)
        left = data_bytes
        while left:
            chunk = rng.randbytes(min(WRITE_CHUNK, left))
            sha.update(chunk)
            md5.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    total = len(header) + data_bytes
    digest = sha.hexdigest()
    return GeneratedFile(
        path=path.name,
        size=total,
        sha256=digest,
        md5=md5.hexdigest(),
        git_sha1=_git_blob_sha1(_lfs_pointer(digest, total)),
        lfs=True,
    )


def write_small(path: Path, data: bytes) -> GeneratedFile:
    path.write_bytes(data)
    return GeneratedFile(
        path=path.name,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        git_sha1=_git_blob_sha1(data),
        lfs=False,
    )


def hub_documents(files: list[GeneratedFile]) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The revision document and the recursive tree listing of the Hub API."""
    tree: list[dict[str, object]] = []
    siblings: list[dict[str, object]] = []
    for f in files:
        entry: dict[str, object] = {"type": "file", "path": f.path, "size": f.size, "oid": f.git_sha1}
        sibling: dict[str, object] = {"rfilename": f.path, "size": f.size, "blobId": f.git_sha1}
        if f.lfs:
            lfs = {"oid": f.sha256, "size": f.size, "pointerSize": len(_lfs_pointer(f.sha256, f.size))}
            entry["lfs"] = lfs
            sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": lfs["pointerSize"]}
        tree.append(entry)
        siblings.append(sibling)
    info: dict[str, object] = {
        "_id": "0" * 24,
        "id": REPO,
        "modelId": REPO,
        "sha": COMMIT,
        "private": False,
        "gated": False,
        "disabled": False,
        "tags": [],
        "siblings": siblings,
        "lastModified": "2026-01-01T00:00:00.000Z",
    }
    return info, tree


def list_objects_xml(files: list[GeneratedFile], etags: dict[str, str] | None = None) -> str:
    """A ListObjectsV2 answer for ``s3://bench/model`` (one page).

    ``etags`` overrides the MD5 ETags with what the server really sends on GET/HEAD
    (nginx's ``"mtime-size"``), so a client that checks the object did not change sees it did not.
    """
    etags = etags or {}
    contents = "".join(
        f"<Contents><Key>{escape(PREFIX + '/' + f.path)}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>"
        f"<ETag>&quot;{etags.get(f.path, f.md5)}&quot;</ETag><Size>{f.size}</Size>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
        for f in files
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Name>{BUCKET}</Name><Prefix>{PREFIX}/</Prefix><KeyCount>{len(files)}</KeyCount>"
        f"<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{contents}</ListBucketResult>\n"
    )


def write_tree_file(files_dir: Path, n: int, max_kib: int) -> GeneratedFile:
    """Small file ``n`` of a many-file tree: 1 to ``max_kib`` KiB, in one of 100 directories."""
    rel = f"d{n % 100:02d}/f{n:07d}.bin"
    size = 1024 * (1 + (n * 2654435761) % max_kib)
    data = hashlib.sha256(n.to_bytes(8, "little")).digest() * (size // 32)
    (files_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    made = write_small(files_dir / rel, data)
    return GeneratedFile(**{**asdict(made), "path": rel})


def generate(
    root: Path, total_bytes: int, shards: int = 4, small_files: int = 0, max_kib: int = 16
) -> list[GeneratedFile]:
    """Write the model under ``root/files`` and the protocol documents under ``root/api``.

    With ``small_files``, the model is that many files of 1 to ``max_kib`` KiB instead of shards.
    Reuses an existing model of the same shape (the generator is deterministic).
    """
    files_dir, api_dir = root / "files", root / "api"
    index = root / "index.json"
    if index.exists():
        saved = json.loads(index.read_text())
        shape = (saved.get("total_bytes"), saved.get("shards"), saved.get("small_files", 0), saved.get("max_kib", 16))
        if shape == (total_bytes, shards, small_files, max_kib):
            return [GeneratedFile(**f) for f in saved["files"]]
    files_dir.mkdir(parents=True, exist_ok=True)
    api_dir.mkdir(parents=True, exist_ok=True)
    files: list[GeneratedFile] = []
    if small_files:
        files = [write_tree_file(files_dir, n, max_kib) for n in range(small_files)]
    for n in range(shards if not small_files else 0):
        name = f"model-{n + 1:05d}-of-{shards:05d}.safetensors"
        files.append(write_shard(files_dir / name, total_bytes // shards, seed=n))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float16"}
    files.append(write_small(files_dir / "config.json", json.dumps(config, indent=2).encode()))
    info, tree = hub_documents(files)
    (api_dir / "revision.json").write_text(json.dumps(info))
    (api_dir / "tree.json").write_text(json.dumps(tree))
    (api_dir / "list.xml").write_text(list_objects_xml(files))
    shape = {"total_bytes": total_bytes, "shards": shards, "small_files": small_files, "max_kib": max_kib}
    index.write_text(json.dumps({**shape, "files": [asdict(f) for f in files]}))
    return files


def warm(root: Path, files: list[GeneratedFile]) -> None:
    """Read every file once so that it is in the page cache before the first timed run.

    A model reused from an earlier invocation may have been pushed out of the cache meanwhile, and
    the first tool then pays for the disk reads alone (measured: 4.5-5.9 s against 3.9-4.1 s for a
    2 GiB HTTPS download, the server reading from disk). The tools run in a fixed order, so that
    tool was always modelferry.
    """
    for f in files:
        with open(root / "files" / f.path, "rb", buffering=0) as fh:
            while fh.read(WRITE_CHUNK):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path, help="directory to write the model into")
    parser.add_argument("--size-gb", type=float, default=2.0, help="total size of the shards in GiB")
    parser.add_argument("--shards", type=int, default=4, help="number of safetensors shards")
    args = parser.parse_args()
    for f in generate(args.root, int(args.size_gb * GiB), args.shards):
        print(f"{f.path} {f.size} {f.sha256}")


if __name__ == "__main__":
    os.umask(0o022)
    main()
