"""The agent's sources are any URI: a model in an S3 bucket (moto), credentials from a ``spec.storage.key`` Secret."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelferry.controller.agent.entries import ModelEntry, ModelStatus
from modelferry.controller.agent.gopher import Gopher
from modelferry.controller.agent.metrics import AgentMetrics
from modelferry.controller.agent.secretcreds import credentials_from_secret
from modelferry.controller.agent.settings import AgentOptions, AgentSettings
from modelferry.controller.agent.tasks import ModelRef, Task, TaskQueue, TaskType
from modelferry.modelinfo import inspect_store
from modelferry.settings import Credentials, S3Credentials
from modelferry.storage.s3 import S3Store
from modelferry.uri import parse_uri
from tests.integration.test_agent_kube import write_model
from tests.servers.moto_session import clean_moto
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, MotoS3


@pytest.fixture
def moto() -> Iterator[MotoS3]:
    yield from clean_moto()


def upload(moto: MotoS3, tmp_path: Path) -> int:
    params = write_model(tmp_path / "m", 256, layers=4)
    client = moto.create_bucket("agent-models")
    for f in (tmp_path / "m").iterdir():
        client.put_object(Bucket="agent-models", Key=f"llama/{f.name}", Body=f.read_bytes())
    return params


class Sink:
    def __init__(self) -> None:
        self.entries: list[ModelEntry] = []

    def publish(self, entry: ModelEntry) -> None:
        self.entries.append(entry)


def test_download_from_s3_with_secret_credentials(moto: MotoS3, tmp_path: Path) -> None:
    params = upload(moto, tmp_path)
    root = tmp_path / "models"
    root.mkdir()
    settings = AgentSettings()
    settings.agent = AgentOptions(node_name="n", models_root=str(root), retry_backoff=0.01)
    settings.transfer.free_space_margin = 0
    secret = {
        "stringData": {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_S3_ENDPOINT": moto.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    }
    creds = credentials_from_secret(secret, Credentials())
    sink = Sink()
    gopher = Gopher(settings, TaskQueue(), sink, AgentMetrics(), credentials_for=lambda _t: creds)
    obj = {
        "kind": "ClusterBaseModel",
        "metadata": {"name": "llama"},
        "spec": {"storage": {"storageUri": "s3://agent-models/llama", "key": "s3-creds"}},
    }
    gopher.run(Task(TaskType.DOWNLOAD, ModelRef.of(obj), obj))
    last = sink.entries[-1]
    assert last.status == ModelStatus.READY, last
    assert last.config is not None and last.config["parameters"] == params
    manifest = json.loads((root / "_cluster" / "llama" / ".modelferry" / "manifest.json").read_text())
    assert manifest["source"] == "s3://agent-models/llama"
    assert {f["path"] for f in manifest["files"]} == {"config.json", "model.safetensors"}
    assert all(f.get("sha256") for f in manifest["files"])

    # With wrong keys in the Secret the download is denied and reported as Failed, AccessDenied.
    wrong = credentials_from_secret(
        {
            "stringData": {
                "AWS_S3_ENDPOINT": moto.endpoint,
                "AWS_ACCESS_KEY_ID": "AKIAWRONG",
                "AWS_SECRET_ACCESS_KEY": "wrong-secret",
            }
        },
        Credentials(),
    )
    sink2 = Sink()
    denied = Gopher(settings, TaskQueue(), sink2, AgentMetrics(), credentials_for=lambda _t: wrong)
    other = {**obj, "metadata": {"name": "llama-2"}}
    moto.enforce_auth()
    denied.run(Task(TaskType.DOWNLOAD, ModelRef.of(other), other))
    assert sink2.entries[-1].status == ModelStatus.FAILED
    assert sink2.entries[-1].reason == "AccessDenied", sink2.entries[-1]
    assert not (root / "_cluster" / "llama-2").exists()
    assert not (root / "_cluster" / "llama-2.modelferry-new").exists()


def test_inspect_reads_headers_from_a_bucket(moto: MotoS3, tmp_path: Path) -> None:
    params = upload(moto, tmp_path)
    creds = S3Credentials(endpoint_url=moto.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)
    store = S3Store(parse_uri("s3://agent-models/llama"), creds, AgentSettings().transfer)
    meta = inspect_store(store)
    assert meta.parameters == params and meta.architecture == "LlamaForCausalLM" and meta.format == "safetensors"
