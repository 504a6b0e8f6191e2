"""``modelferry upload`` with a real moto S3 server and the Kubernetes API emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelferry.cli.main import main
from tests.servers.kube import ThreadedKubeEmulator
from tests.servers.moto_session import clean_moto
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, MotoS3, list_keys


@pytest.fixture
def moto() -> Iterator[MotoS3]:
    yield from clean_moto()


@pytest.fixture
def kube() -> Iterator[ThreadedKubeEmulator]:
    threaded = ThreadedKubeEmulator()
    with threaded:
        yield threaded


def data_connection(kube: ThreadedKubeEmulator, endpoint: str, bucket: str = "demo-bucket") -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "demo-models", "namespace": "demo"},
        "stringData": {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_S3_ENDPOINT": endpoint,
            "AWS_S3_BUCKET": bucket,
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    }
    kube.call(kube.emu.put_object("v1", "secrets", secret))


def run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


def test_upload_flat_under_models_and_complete(
    moto: MotoS3, kube: ThreadedKubeEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = moto.create_bucket("demo-bucket")
    data_connection(kube, moto.endpoint)
    model = tmp_path / "aligned-model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "sub" / "weights.safetensors").write_bytes(b"x" * 4096)
    extra = tmp_path / "README.md"
    extra.write_text("hello")
    code = run(["upload", f"{model}/", str(extra), "--api-url", kube.emu.url, "--complete"])
    assert code == 0
    keys = set(list_keys(client, "demo-bucket", "models/"))
    assert {"models/config.json", "models/sub/weights.safetensors", "models/README.md"} <= keys
    body = client.get_object(Bucket="demo-bucket", Key="models/config.json")["Body"].read()
    assert body == b'{"model_type": "llama"}'
    secret = kube.emu.get("v1", "secrets", "demo", "model-source")
    assert secret is not None and secret["data"]["S3_SYNC_LOCAL_UPLOAD_COMPLETE"] == "dHJ1ZQ=="
    assert SECRET_KEY not in capsys.readouterr().err
    # Second run: everything is there already; --complete replaces the Secret in place.
    assert run(["upload", f"{model}/", "--api-url", kube.emu.url, "--complete"]) == 0
    assert "0 files" in capsys.readouterr().out


def test_upload_missing_data_connection_is_a_clear_error(kube: ThreadedKubeEmulator, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    args = ["upload", str(tmp_path), "--api-url", kube.emu.url, "--data-connection", "nope", "--wait", "0"]
    assert run(args) == 3


def test_upload_data_connection_without_keys(kube: ThreadedKubeEmulator, tmp_path: Path) -> None:
    secret = {"metadata": {"name": "demo-models", "namespace": "demo"}, "stringData": {"AWS_S3_BUCKET": "b"}}
    kube.call(kube.emu.put_object("v1", "secrets", secret))
    (tmp_path / "f").write_text("x")
    assert run(["upload", str(tmp_path), "--api-url", kube.emu.url]) == 2


def test_upload_needs_something_to_do() -> None:
    assert run(["upload"]) == 2


def test_controller_cli_serves_and_stops_on_sigterm(kube: ThreadedKubeEmulator, tmp_path: Path) -> None:
    """The real `modelferry controller` process: creates the Job, then drains and exits 0 on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data_connection(kube, "http://127.0.0.1:9", bucket="demo-bucket")
    source = {
        "metadata": {"name": "model-source", "namespace": "demo"},
        "stringData": {"S3_SYNC_LOCAL_UPLOAD_COMPLETE": "true"},
    }
    kube.call(kube.emu.put_object("v1", "secrets", source))
    env = {**os.environ, "MODELFERRY_CONTROLLER__LEASE_NAMESPACE": "demo", "MODELFERRY_CONTROLLER__METRICS_PORT": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelferry", "controller", "--api-url", kube.emu.url, "--namespace", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while kube.emu.get("batch/v1", "jobs", "demo", "synchronize-model") is None:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "no Job created"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lease = kube.emu.get("coordination.k8s.io/v1", "leases", "demo", "modelferry-controller")
    assert lease is not None and lease["spec"]["holderIdentity"] is None  # released on the way out
