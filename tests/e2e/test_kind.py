"""End to end on a real cluster (kind): the dev overlay, an S3 server pod, a model-source Secret.

Needs a reachable cluster (current kubeconfig context) with the image ``localhost/modelferry:dev``
loaded (``podman build -t localhost/modelferry:dev -f Containerfile . && kind load docker-image ...``)
and the ``motoserver/moto`` image pullable. Run with ``pytest -m e2e tests/e2e/test_kind.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NS = "demo"
IMAGE = "localhost/modelferry:dev"

SEED = textwrap.dedent(
    """
    import boto3, sys
    s3 = boto3.client("s3", endpoint_url="http://moto.demo.svc:5000", region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    if sys.argv[1] == "seed":
        for bucket in ("source", "demo-models"):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket="source", Key="granite/config.json", Body=b'{"model_type": "granite"}')
        s3.put_object(Bucket="source", Key="granite/model.safetensors", Body=b"x" * 1_000_000)
    else:
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="demo-models", Prefix="models/").get("Contents", [])}
        assert {"models/config.json", "models/model.safetensors"} <= keys, keys
    """
)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, check=check, timeout=600)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    probe = subprocess.run(
        ["kubectl", "get", "--raw", "/readyz"], capture_output=True, text=True, timeout=20, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"no Kubernetes cluster reachable with the current kubeconfig: {probe.stderr.strip()[:200]}")
    yield
    kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false", check=False)


def python_job(name: str, mode: str) -> str:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "backoffLimit": 3,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "run",
                            "image": IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-c", SEED, mode],
                        }
                    ],
                }
            },
        },
    }
    return json.dumps(job)


MOTO = textwrap.dedent(
    """
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: moto, namespace: demo}
    spec:
      selector: {matchLabels: {app: moto}}
      template:
        metadata: {labels: {app: moto}}
        spec:
          containers:
          - {name: moto, image: motoserver/moto:5.0.28, ports: [{containerPort: 5000}]}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: moto, namespace: demo}
    spec:
      selector: {app: moto}
      ports: [{port: 5000, targetPort: 5000}]
    """
)


def test_model_source_secret_fills_the_bucket(cluster: None) -> None:
    kubectl("apply", "-k", str(ROOT / "kustomize" / "overlays" / "dev"))
    kubectl("create", "namespace", NS, check=False)
    kubectl("apply", "-f", "-", stdin=MOTO)
    kubectl("-n", NS, "rollout", "status", "deployment/moto", "--timeout=180s")
    kubectl("-n", "modelferry", "rollout", "status", "deployment/modelferry-controller", "--timeout=180s")
    kubectl("apply", "-f", "-", stdin=python_job("seed", "seed"))
    kubectl("-n", NS, "wait", "--for=condition=complete", "job/seed", "--timeout=180s")
    data_connection = {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "demo-models", "namespace": NS},
        "stringData": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_S3_ENDPOINT": "http://moto.demo.svc:5000", "AWS_S3_BUCKET": "demo-models",
                       "AWS_DEFAULT_REGION": "us-east-1"},
    }  # fmt: skip
    source = {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "model-source", "namespace": NS},
        "stringData": {"S3_SYNC_SRC__PATH": "s3://source/granite/"},
    }  # fmt: skip
    kubectl("apply", "-f", "-", stdin=json.dumps(data_connection))
    kubectl("apply", "-f", "-", stdin=json.dumps(source))
    for _ in range(60):
        if kubectl("-n", NS, "get", "job", "synchronize-model", check=False).returncode == 0:
            break
        time.sleep(2)  # polling a real cluster
    kubectl("-n", NS, "wait", "--for=condition=complete", "job/synchronize-model", "--timeout=300s")
    kubectl("apply", "-f", "-", stdin=python_job("verify", "verify"))
    kubectl("-n", NS, "wait", "--for=condition=complete", "job/verify", "--timeout=180s")
