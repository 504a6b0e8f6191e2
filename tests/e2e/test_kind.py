"""End to end on a real cluster (kind): every kind the project ships, each to its completion check.

Needs a reachable cluster (the current kubeconfig context) with the image ``localhost/modelferry:dev``
loaded and ``motoserver/moto`` pullable; it skips with the reason otherwise. Set ``E2E_IMAGE_COMMAND`` to
the one command that builds and loads the image and the suite runs it first, for example::

    E2E_IMAGE_COMMAND='podman build -t localhost/modelferry:dev -f Containerfile . && \
      podman save localhost/modelferry:dev -o /tmp/mf.tar && kind load image-archive /tmp/mf.tar'

The TrainingRun test also needs an image with the ``train`` extra (``E2E_TRAIN_IMAGE``, loaded likewise).
Run with ``pytest -m e2e tests/e2e/test_kind.py`` (docs/testing.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NS = "demo"
IMAGE = "localhost/modelferry:dev"
# Read at import: the hermetic-environment fixture clears MODELFERRY_* names, not these.
IMAGE_COMMAND = os.environ.get("E2E_IMAGE_COMMAND", "")
TRAIN_IMAGE = os.environ.get("E2E_TRAIN_IMAGE", "")
MOTO_URL = "http://moto.demo.svc:5000"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_S3_ENDPOINT": MOTO_URL,
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip

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
    elif sys.argv[1] == "seed-training":
        import pathlib, subprocess
        out = pathlib.Path("/tmp/tiny")
        subprocess.run([sys.executable, "-m", "modelferry.sidecar.trainers.peft_lora", "--build-tiny-model", str(out / "model"),
                        "--dataset", str(out / "train.jsonl")], check=True)
        s3.create_bucket(Bucket="training")
        for path in (out / "model").iterdir():
            s3.upload_file(str(path), "training", f"tiny/{path.name}")
        s3.upload_file(str(out / "train.jsonl"), "training", "data/train.jsonl")
    else:
        prefix = sys.argv[2]
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=sys.argv[3], Prefix=prefix).get("Contents", [])}
        want = set(sys.argv[4].split(","))
        assert {prefix + k for k in want} <= keys, keys
    """
)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, check=check, timeout=600)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """The dev overlay, the moto S3 server and the seeded source bucket (once per module)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    probe = subprocess.run(
        ["kubectl", "get", "--raw", "/readyz"], capture_output=True, text=True, timeout=20, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"no Kubernetes cluster reachable with the current kubeconfig: {probe.stderr.strip()[:200]}")
    if IMAGE_COMMAND:
        subprocess.run(["sh", "-c", IMAGE_COMMAND], check=True, timeout=3600)
    kubectl("apply", "-k", str(ROOT / "kustomize" / "overlays" / "dev"))
    kubectl("create", "namespace", NS, check=False)
    kubectl("apply", "-f", "-", stdin=MOTO)
    kubectl("-n", NS, "rollout", "status", "deployment/moto", "--timeout=180s")
    kubectl("-n", "modelferry", "rollout", "status", "deployment/modelferry-controller", "--timeout=180s")
    run_job("seed", "seed")
    apply(secret("demo-models", {**S3_KEYS, "AWS_S3_BUCKET": "demo-models"}))
    yield
    kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false", check=False)


def apply(obj: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps(obj))


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "stringData": data}


def run_job(name: str, *args: str, image: str = IMAGE) -> None:
    """A one-off Python Job in the cluster (seeding and checking the bucket); waits for it to complete."""
    kubectl("-n", NS, "delete", "job", name, "--ignore-not-found", "--wait=true")
    kubectl("apply", "-f", "-", stdin=python_job(name, *args, image=image))
    kubectl("-n", NS, "wait", "--for=condition=complete", f"job/{name}", "--timeout=600s")


def wait_for(*args: str, timeout: float = 120) -> None:
    """``kubectl wait`` needs the object to exist: poll for it first (a real cluster, real time)."""
    deadline = time.monotonic() + timeout
    while kubectl("-n", NS, "get", *args[1:2], check=False).returncode != 0:
        assert time.monotonic() < deadline, f"{args[1]} did not appear"
        time.sleep(2)
    kubectl("-n", NS, "wait", *args, "--timeout=600s")


def python_job(name: str, *args: str, image: str = IMAGE) -> str:
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
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-c", SEED, *args],
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
    apply(secret("model-source", {"S3_SYNC_SRC__PATH": "s3://source/granite/"}))
    wait_for("--for=condition=complete", "job/synchronize-model")
    run_job("verify-secret", "verify", "models/", "demo-models", "config.json,model.safetensors")


def test_modelsync_fills_the_bucket(cluster: None) -> None:
    apply(secret("source-s3", S3_KEYS))
    modelsync = {
        "apiVersion": "modelferry.io/v1alpha1", "kind": "ModelSync", "metadata": {"name": "granite", "namespace": NS},
        "spec": {"source": {"uri": "s3://source/granite/", "credentialsSecret": "source-s3"},
                 "target": {"dataConnection": "demo-models", "path": "modelsync/granite/"}},
    }  # fmt: skip
    apply(modelsync)
    wait_for("--for=jsonpath={.status.phase}=Succeeded", "modelsync/granite")
    run_job("verify-modelsync", "verify", "modelsync/granite/", "demo-models", "config.json,model.safetensors")


@pytest.mark.skipif(not TRAIN_IMAGE, reason="E2E_TRAIN_IMAGE is unset: no image with the train extra loaded")
def test_trainingrun_with_the_built_in_trainer(cluster: None) -> None:
    kubectl("-n", "modelferry", "set", "env", "deployment/modelferry-controller",
            f"MODELFERRY_CONTROLLER__TRAINING__TRAIN_IMAGE={TRAIN_IMAGE}")  # fmt: skip
    kubectl("-n", "modelferry", "rollout", "status", "deployment/modelferry-controller", "--timeout=180s")
    run_job("seed-training", "seed-training", image=TRAIN_IMAGE)
    apply(secret("training-s3", {**S3_KEYS, "AWS_S3_BUCKET": "training"}))
    run = {
        "apiVersion": "modelferry.io/v1alpha1", "kind": "TrainingRun", "metadata": {"name": "tiny-lora", "namespace": NS},
        "spec": {"baseModel": {"uri": "s3://training/tiny/", "secretRef": "training-s3"},
                 "dataset": {"uri": "s3://training/data/train.jsonl", "secretRef": "training-s3"},
                 "trainer": {"runtime": "peft-lora"},
                 "hyperparameters": {"num_train_epochs": 1, "train_batch_size": 2},
                 "output": {"uri": "s3://training/out/tiny-lora/", "secretRef": "training-s3"}},
    }  # fmt: skip
    apply(run)
    wait_for("--for=jsonpath={.status.phase}=Succeeded", "trainingrun/tiny-lora", timeout=300)
    run_job("verify-training", "verify", "out/tiny-lora/", "training", "adapter_config.json")


def test_agent_downloads_a_basemodel(cluster: None) -> None:
    kubectl("-n", "modelferry", "rollout", "status", "daemonset/modelferry-agent", "--timeout=180s")
    apply(secret("agent-s3", S3_KEYS))
    model = {
        "apiVersion": "modelferry.io/v1alpha1", "kind": "BaseModel", "metadata": {"name": "granite", "namespace": NS},
        "spec": {"storage": {"storageUri": "s3://source/granite/", "key": "agent-s3"}},
    }  # fmt: skip
    apply(model)
    node = kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout.strip()
    deadline = time.monotonic() + 300
    while True:
        cm = kubectl("-n", "modelferry", "get", "configmap", node, "-o", "json", check=False)
        data = json.loads(cm.stdout).get("data", {}) if cm.returncode == 0 else {}
        entry = json.loads(data.get(f"{NS}.basemodel.granite", "{}"))
        if entry.get("status") == "Ready":
            break
        assert entry.get("status") != "Failed", entry
        assert time.monotonic() < deadline, f"the agent did not report the BaseModel Ready: {entry}"
        time.sleep(2)  # polling a real cluster
    labels = json.loads(kubectl("get", "node", node, "-o", "json").stdout)["metadata"]["labels"]
    assert labels.get(f"models.modelferry.io/{NS}.basemodel.granite") == "Ready"


@pytest.mark.skipif(not TRAIN_IMAGE, reason="E2E_TRAIN_IMAGE is unset: the transformers engine runs in the train image")
def test_modelserver_with_the_built_in_engine(cluster: None) -> None:
    kubectl("-n", "modelferry", "set", "env", "deployment/modelferry-controller",
            f"MODELFERRY_CONTROLLER__SERVING__SERVE_IMAGE={TRAIN_IMAGE}")  # fmt: skip
    kubectl("-n", "modelferry", "rollout", "status", "deployment/modelferry-controller", "--timeout=180s")
    run_job("seed-serving", "seed-training", image=TRAIN_IMAGE)  # the tiny model in s3://training/tiny/
    apply(secret("serving-s3", {**S3_KEYS, "AWS_S3_BUCKET": "training"}))
    server = {
        "apiVersion": "modelferry.io/v1alpha1", "kind": "ModelServer", "metadata": {"name": "tiny", "namespace": NS},
        "spec": {"model": {"uri": "s3://training/tiny/", "secretRef": "serving-s3"},
                 "engine": {"type": "transformers"},
                 "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}},
    }  # fmt: skip
    apply(server)
    wait_for("--for=jsonpath={.status.phase}=Ready", "modelserver/tiny", timeout=600)
    url = kubectl("-n", NS, "get", "modelserver", "tiny", "-o", "jsonpath={.status.url}").stdout.strip()
    assert url.startswith("http://tiny.demo.svc")
    # one chat request from inside the cluster, as any OpenAI client sends it
    ask = ("import json, urllib.request; body = json.dumps({'model': 'tiny', 'max_tokens': 4, "
           "'messages': [{'role': 'user', 'content': 'hi'}]}).encode(); "
           f"r = urllib.request.urlopen(urllib.request.Request('{url}/chat/completions', body, "
           "{'Content-Type': 'application/json'}), timeout=120); "
           "assert json.load(r)['choices'][0]['message']['role'] == 'assistant'")  # fmt: skip
    kubectl("-n", NS, "delete", "job", "ask-tiny", "--ignore-not-found", "--wait=true")
    job = json.loads(python_job("ask-tiny", image=TRAIN_IMAGE))
    job["spec"]["template"]["spec"]["containers"][0]["command"] = ["python3", "-c", ask]
    kubectl("apply", "-f", "-", stdin=json.dumps(job))
    kubectl("-n", NS, "wait", "--for=condition=complete", "job/ask-tiny", "--timeout=300s")
