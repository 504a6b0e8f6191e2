"""Embedded MLflow tracking server (sqlite) on loopback: for ``modelferry demo`` and tests.

It runs MLflow's FastAPI app under uvicorn in a child process (one worker, no job runner): ready in
a few seconds, about 300 MB, and it can be stopped and started again on the same port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from modelferry.errors import RetryableError

_SERVER = """
import os, sys, threading, time

def _orphan_watch(parent=os.getppid()):
    while os.getppid() == parent:  # our parent died without stopping us (SIGKILL, SIGTERM): leave too
        time.sleep(1)
    os._exit(0)

threading.Thread(target=_orphan_watch, daemon=True).start()
import uvicorn
from mlflow.server.fastapi_app import app
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    """An ephemeral loopback port that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedMlflow:
    """``start()``/``stop()`` an MLflow server with its sqlite database and artifacts under ``root``."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{self.root / 'mlflow.db'}",
            "_MLFLOW_SERVER_ARTIFACT_ROOT": str(self.root / "artifacts"),
            "_MLFLOW_SERVER_SERVE_ARTIFACTS": "false",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_SERVER_ALLOWED_HOSTS": "127.0.0.1:*,localhost:*",
        }
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(self.port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RetryableError(
                    f"the embedded MLflow server exited with {self.proc.returncode}",
                    hint=f"See {self.root / 'server.log'}",
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:  # noqa: S310 - our http URL
                    if resp.status == 200:
                        return self.url
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise RetryableError("the embedded MLflow server did not start in time", hint=f"See {self.root / 'server.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
