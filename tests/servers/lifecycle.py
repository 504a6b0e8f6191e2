"""Stand-ins for tests/integration/test_sync_lifecycle.py: a Hub that goes silent, a bucket that only
buffers parts, and a way to run the real console entry point as a child process."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from modelferry.storage.base import ObjectInfo, PartWriter, Store, StoreFeatures, Upload
from modelferry.uri import parse_uri
from tests.servers.hfhub import FakeHub, HubRepo

ROOT = Path(__file__).resolve().parents[2]


class StallingHub(FakeHub):
    """The Hub stand-in, plus a fault: send ``stall_after`` bytes of a ranged GET, then go silent."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.stall_after = 0  # bytes sent before going silent (less than a part) ...
        self.stall_count = 0  # ... for this many GETs ...
        self.stall_path = "model.safetensors"  # ... of this file
        self.stalled = 0
        self.closing = False  # set on exit: stalled handlers end at once, so shutting down never waits on them

    def __exit__(self, *exc: object) -> None:
        self.closing = True
        super().__exit__(*exc)

    async def _serve(self, request: web.Request, repo: HubRepo, sha: str, path: str) -> web.StreamResponse:
        data = repo.files[path]
        first, _, last = request.headers.get("Range", "bytes=0-")[6:].partition("-")
        start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
        long_enough = end - start + 1 > self.stall_after  # a short range would be complete before the stall
        if request.method != "GET" or path != self.stall_path or not long_enough or not self._take_stall():
            return await super()._serve(request, repo, sha, path)
        headers = {**self._file_headers(repo, sha, path), "Content-Range": f"bytes {start}-{end}/{len(data)}"}
        self._log(request, path, (start, end), 206)
        resp = web.StreamResponse(status=206, headers=headers)
        resp.content_length = end - start + 1
        if self.stall_after >= 0:  # a negative stall_after goes silent before the status line
            await resp.prepare(request)
            await resp.write(data[start : start + self.stall_after])
        self.stalled += 1
        # Silent, with the connection open, until the client gives up (or 20 s pass).
        for _ in range(400):
            if self.closing or request.transport is None or request.transport.is_closing():
                break
            await asyncio.sleep(0.05)
        if request.transport is not None:
            request.transport.abort()
        return resp

    def _take_stall(self) -> bool:
        with self._lock:
            if self.stall_count <= 0:
                return False
            self.stall_count -= 1
            return True


def spawn(tmp_path: Path, *args: str, env: dict[str, str] | None = None, prelude: str = "") -> subprocess.Popen[bytes]:
    """``python -m modelferry ARGS`` with stdout/stderr in files (no pipe can fill up and block it).

    ``prelude`` is Python run first in the child (instead of a ``preexec_fn``, unsafe with threads).
    """
    stdout = open(tmp_path / "stdout", "wb")  # noqa: SIM115 - closed when the child has them
    stderr = open(tmp_path / "stderr", "wb")  # noqa: SIM115
    code = f"{prelude}\nimport runpy\nrunpy.run_module('modelferry', run_name='__main__', alter_sys=True)"
    try:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=ROOT,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        )
    finally:
        stdout.close()
        stderr.close()


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """Wait for the child's exit code; kill it if it outlives ``timeout``."""
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """SIGTERM ``proc`` and wait for it: (exit code, seconds it took to drain)."""
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code = finish(proc, timeout=timeout)
    return code, time.monotonic() - signalled


def journaled_parts(out: Path) -> set[int]:
    """Part numbers recorded in the resume journals under ``out`` (a torn last line is skipped)."""
    done: set[int] = set()
    for journal in (out / ".modelferry" / "partial").glob("*.journal"):
        try:
            lines = journal.read_text().splitlines()[1:]
        except FileNotFoundError:  # its file was completed (journal removed) since the glob
            continue
        for line in lines:
            try:
                done.add(int(json.loads(line)["i"]))
            except (ValueError, KeyError):
                continue
    return done


def wait_for(predicate: Any, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> bool:
    """Poll ``predicate`` until it holds, ``proc`` exits, or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return bool(predicate())
        time.sleep(0.02)
    return False


class BufferedPart(PartWriter):
    def __init__(self, upload: BufferedUpload, index: int) -> None:
        self.upload, self.index, self.buf = upload, index, bytearray()

    def write(self, data: bytes | memoryview) -> None:
        self.buf += data

    def commit(self) -> None:
        self.upload.md5s[self.index] = hashlib.md5(self.buf).hexdigest()
        self.buf = bytearray()  # "sent": a real bucket's upload drops the part here too

    def discard(self) -> None:
        self.buf = bytearray()


class BufferedUpload(Upload):
    buffers_parts = True

    def __init__(self, bucket: NullBucket, path: str, size: int, part_size: int) -> None:
        self.bucket, self.path, self.size, self.part_size = bucket, path, size, part_size
        self.md5s: dict[int, str] = {}

    def part(self, index: int, offset: int, length: int) -> PartWriter:
        return BufferedPart(self, index)

    def complete(self) -> str | None:
        self.bucket.placed[self.path] = len(self.md5s)
        return None

    def abort(self, *, keep_partial: bool = False) -> None:
        return None


class NullBucket(Store):
    """An object-store-shaped target that holds each part in memory until it is committed, then drops it."""

    features = StoreFeatures(random_write=False)

    def __init__(self) -> None:
        self.uri = parse_uri("s3://null/models")
        self.placed: dict[str, int] = {}
        self.small: dict[str, bytes] = {}

    def list(self) -> Iterator[ObjectInfo]:
        return iter(())

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterator[bytes]:
        return iter(())

    def read_bytes(self, path: str) -> bytes | None:
        return self.small.get(path)

    def open_upload(self, path: str, size: int, part_size: int, *, fingerprint: str = "") -> Upload:
        return BufferedUpload(self, path, size, part_size)

    def put_bytes(self, path: str, data: bytes) -> None:
        self.small[path] = data

    def delete(self, path: str) -> None:
        self.small.pop(path, None)


def run_modelferry(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``modelferry ARGS`` in a child process of this checkout, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "modelferry", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
