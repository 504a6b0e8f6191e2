"""``modelferry upload`` as a drop-in for the proof-of-concept's ``upload.sh`` (seed 004).

The seed's directory layout and command line (``upload.sh aligned-model/`` run from ``~/Downloads``),
its bucket name, the trailing-slash rule, the in-cluster endpoint switched to the external S3 route,
and the bounded wait for the data connection.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from modelferry.cli.upload import cluster_service, route_url
from tests.integration import test_controller_upload as upload_tests
from tests.integration.test_controller_upload import run
from tests.servers.kube import ThreadedKubeEmulator
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, MotoS3, list_keys

moto = upload_tests.moto  # the same fixtures: a clean moto S3 and the API emulator
kube = upload_tests.kube

BUCKET = "demo-64d3c912-dd41-4ec5-bf3a-cff4895655b0"  # the seed's
IN_CLUSTER = "https://s3.openshift-storage.svc:443"


@pytest.fixture
def downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The seed's layout: ~/Downloads/aligned-model/{config.json (518 B), example.safetensors (1588 B)}."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # a workstation, outside the cluster
    model = tmp_path / "Downloads" / "aligned-model"
    model.mkdir(parents=True)
    (model / "config.json").write_bytes(b"{" + b" " * 516 + b"}")
    (model / "example.safetensors").write_bytes(os.urandom(1588))
    monkeypatch.chdir(tmp_path / "Downloads")
    return model


def data_connection(kube: ThreadedKubeEmulator, endpoint: str = IN_CLUSTER) -> dict[str, object]:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "demo-models",
            "namespace": "demo",
            "labels": {"opendatahub.io/dashboard": "true", "opendatahub.io/managed": "true"},
            "annotations": {"opendatahub.io/connection-type": "s3"},
        },
        "stringData": {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_S3_ENDPOINT": endpoint,
            "AWS_S3_BUCKET": BUCKET,
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    }
    return secret


def s3_route(kube: ThreadedKubeEmulator, moto: MotoS3) -> None:
    """The cluster's external S3 route (here it leads to moto)."""
    host = moto.endpoint.split("://", 1)[1]
    for name, service in (("s3", "s3"), ("sts", "sts")):
        route = {
            "apiVersion": "route.openshift.io/v1",
            "kind": "Route",
            "metadata": {"name": name, "namespace": "openshift-storage"},
            "spec": {
                "host": host if service == "s3" else "sts.example.com",
                "to": {"kind": "Service", "name": service},
            },
        }
        kube.call(kube.emu.put_object("route.openshift.io/v1", "routes", route))


def test_seed_command_line_layout_and_route(
    moto: MotoS3, kube: ThreadedKubeEmulator, downloads: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = moto.create_bucket(BUCKET)
    kube.call(kube.emu.put_object("v1", "secrets", data_connection(kube)))
    s3_route(kube, moto)
    # `~/genai-rhoai-poc-template/hack/upload.sh aligned-model/` from ~/Downloads, as in the seed.
    assert run(["upload", "aligned-model/", "--api-url", kube.emu.url]) == 0
    sizes = {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="models/").get("Contents", [])}
    assert sizes["models/config.json"] == 518 and sizes["models/example.safetensors"] == 1588
    assert not any(k.startswith("models/aligned-model/") for k in sizes)
    assert f"s3://{BUCKET}/models/" in capsys.readouterr().out
    # Without the trailing slash the directory itself goes under models/; a file goes by its name.
    assert run(["upload", "aligned-model", "--api-url", kube.emu.url]) == 0
    assert "models/aligned-model/example.safetensors" in list_keys(client, BUCKET, "models/aligned-model/")
    assert run(["upload", "./aligned-model/config.json", "--api-url", kube.emu.url, "--prefix", "other/"]) == 0
    assert [k for k in list_keys(client, BUCKET, "other/") if "/.modelferry/" not in k] == ["other/config.json"]


def test_endpoint_flag_wins_and_missing_route_is_explained(
    moto: MotoS3, kube: ThreadedKubeEmulator, downloads: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = moto.create_bucket(BUCKET)
    kube.call(kube.emu.put_object("v1", "secrets", data_connection(kube)))
    assert run(["upload", "aligned-model/", "--api-url", kube.emu.url]) == 2  # no Route exposes s3
    err = capsys.readouterr().err
    assert "works only inside the cluster" in err and "--endpoint" in err
    assert run(["upload", "aligned-model/", "--api-url", kube.emu.url, "--endpoint", moto.endpoint]) == 0
    assert len(list_keys(client, BUCKET, "models/")) >= 2


def test_waits_for_the_data_connection(moto: MotoS3, kube: ThreadedKubeEmulator, downloads: Path) -> None:
    client = moto.create_bucket(BUCKET)
    s3_route(kube, moto)
    lookups = 0

    def create_when_asked() -> None:
        # The automation creates the data connection after the upload started looking for it.
        nonlocal lookups
        while not any(p.endswith("/secrets/demo-models") for _, p in list(kube.emu.requests)):
            threading.Event().wait(0.02)
        lookups = sum(p.endswith("/secrets/demo-models") for _, p in list(kube.emu.requests))
        kube.call(kube.emu.put_object("v1", "secrets", data_connection(kube)))

    creator = threading.Thread(target=create_when_asked)
    creator.start()
    assert run(["upload", "aligned-model/", "--api-url", kube.emu.url, "--wait", "60"]) == 0
    creator.join(10)
    assert lookups >= 1 and len(list_keys(client, BUCKET, "models/")) >= 2


def test_wait_is_bounded(kube: ThreadedKubeEmulator, downloads: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["upload", "aligned-model/", "--api-url", kube.emu.url, "--wait", "0.2"]) == 3
    err = capsys.readouterr().err
    assert "waiting up to 0.2s" in err and "after waiting 0.2s" in err


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("https://s3.openshift-storage.svc:443", ("s3", "openshift-storage")),
        ("http://minio.models.svc.cluster.local:9000", ("minio", "models")),
        ("https://s3-openshift-storage.apps.example.com", None),
        ("http://127.0.0.1:9000", None),
    ],
)
def test_cluster_service(endpoint: str, expected: tuple[str, str] | None) -> None:
    assert cluster_service(endpoint) == expected


def test_route_url_prefers_tls() -> None:
    routes = [
        {"metadata": {"name": "a"}, "spec": {"host": "plain.example.com", "to": {"kind": "Service", "name": "s3"}}},
        {
            "metadata": {"name": "b"},
            "spec": {"host": "s3.example.com", "tls": {"termination": "reencrypt"}, "to": {"name": "s3"}},
        },
    ]
    assert route_url(routes, "s3") == "https://s3.example.com"
    assert route_url(routes, "sts") is None
