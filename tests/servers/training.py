"""Helpers for the training tests: MLflow server, S3 settings, tiny trainers as Python scripts."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

from modelferry.settings import Credentials, S3Credentials
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, MotoS3


def s3_credentials(server: MotoS3) -> Credentials:
    return Credentials(
        s3=S3Credentials(
            endpoint_url=server.endpoint,
            region="us-east-1",
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            addressing_style="path",
        )
    )


def new_bucket(server: MotoS3, stem: str = "train") -> str:
    name = f"{stem}-{uuid.uuid4().hex[:10]}"
    server.create_bucket(name)
    return name


def script(tmp: Path, name: str, body: str) -> list[str]:
    """Write a Python trainer script; return its argv."""
    path = tmp / f"{name}.py"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return [sys.executable, str(path)]


# A trainer that writes N metric lines to $MODELFERRY_METRICS_FILE, optionally waiting on a gate file.
METRICS_TRAINER = """
import json, os, sys, time, pathlib
out = pathlib.Path(os.environ["MODELFERRY_METRICS_FILE"])
out.parent.mkdir(parents=True, exist_ok=True)
steps = int(sys.argv[1]); gate_at = int(sys.argv[2]) if len(sys.argv) > 2 else -1
gate = pathlib.Path(os.environ["MODELFERRY_WORKSPACE"]) / "gate"
print("run id", os.environ.get("MLFLOW_RUN_ID", ""), flush=True)
with out.open("a") as fh:
    for step in range(1, steps + 1):
        if step == gate_at:
            while not gate.exists():
                time.sleep(0.05)
        fh.write(json.dumps({"step": step, "epoch": step / steps, "loss": 10.0 / step, "total_steps": steps}) + "\\n")
        fh.flush()
(pathlib.Path(os.environ["MODELFERRY_OUTPUT_DIR"]) / "weights.bin").write_bytes(b"w" * 1000)
"""


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client: Any = MlflowClient(tracking_uri)
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
