"""A tenant's BaseModel against the node agent: other namespaces' files, the agent's token, hostile Secrets.

The agent runs against the API emulator with a real models root, as in test_agent_kube.py.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
from pathlib import Path

import pytest

from modelferry.controller.agent.aggregate import aggregate_once
from modelferry.controller.agent.disk import AGENT_MARKER
from modelferry.controller.agent.entries import ModelStatus
from modelferry.controller.agent.secretcreds import credentials_from_secret
from modelferry.controller.agent.tasks import TaskType
from modelferry.logs import scrub
from modelferry.settings import Credentials
from tests.integration.test_agent_gopher import basemodel as gopher_model
from tests.integration.test_agent_gopher import make, minilm, task
from tests.integration.test_agent_kube import API, NS, Rig, basemodel, eventually, rig, write_model

__all__ = ["rig"]  # the fixture


def plant_copy(directory: Path, owner: dict[str, str], body: bytes) -> None:
    """A complete model copy as the agent leaves it: files, manifest, and its marker naming ``owner``."""
    (directory / ".modelferry").mkdir(parents=True)
    (directory / "weights.bin").write_bytes(body)
    (directory / ".modelferry" / "manifest.json").write_text('{"version": 1, "source": "x", "files": []}')
    (directory / AGENT_MARKER).write_text(json.dumps({**owner, "fingerprint": "f"}))


async def test_basemodel_path_cannot_reach_other_namespace(rig: Rig) -> None:
    cluster_copy = rig.root / "_cluster" / "llama"
    plant_copy(cluster_copy, {"kind": "ClusterBaseModel", "namespace": "", "name": "llama"}, b"cluster weights")
    other_tenant = rig.root / "tenant-b" / "llama"
    plant_copy(other_tenant, {"kind": "BaseModel", "namespace": "tenant-b", "name": "llama"}, b"tenant-b weights")
    # The planted copies belong to models that exist and that this node wants (same bytes at their
    # sources), so the agent's cleanup of unwanted directories has no claim on them.
    owners = (
        ("clusterbasemodels", "", "cluster weights", cluster_copy),
        ("basemodels", "tenant-b", "tenant-b weights", other_tenant),
    )
    for plural, ns, body, _ in owners:
        source = rig.src / f"owner-{plural}"
        source.mkdir()
        (source / "weights.bin").write_bytes(body.encode())
        owner = basemodel("llama", f"file://{source}", ns=ns)
        if not ns:
            owner["kind"] = "ClusterBaseModel"
            del owner["metadata"]["namespace"]
        await rig.emu.put_object(API, plural, owner)
    await eventually(lambda: (rig.entry("tenant-b.basemodel.llama") or {}).get("status") == "Ready")
    await eventually(lambda: (rig.entry("clusterbasemodel.llama") or {}).get("status") == "Ready")
    uri = f"file://{rig.src}/v1"
    for name, path in (("steal-cluster", "_cluster/llama"), ("steal-b", "tenant-b/llama"), ("climb", "../x")):
        await rig.emu.put_object(API, "basemodels", basemodel(name, uri, ns="tenant-a", path=path))
    await rig.emu.put_object(API, "basemodels", basemodel("abs", uri, ns="tenant-a", path=str(other_tenant)))
    await rig.emu.put_object(API, "basemodels", basemodel("home", uri, ns="tenant-a", path="tenant-a"))
    for name in ("steal-cluster", "steal-b", "climb", "abs", "home"):
        entry = await eventually(lambda n=name: rig.entry(f"tenant-a.basemodel.{n}"))
        assert entry["status"] == "Failed" and entry["reason"] == "UnsafePath", entry
    assert "tenant-a/" in rig.entry("tenant-a.basemodel.steal-b")["message"]  # type: ignore[index]

    # Deleting the refused models removes nothing of the others'.
    for name in ("steal-cluster", "steal-b", "abs"):
        await rig.emu.remove(API, "basemodels", "tenant-a", name)
    await eventually(lambda: rig.entry("tenant-a.basemodel.steal-b") is None)
    assert (cluster_copy / "weights.bin").read_bytes() == b"cluster weights"
    assert (other_tenant / "weights.bin").read_bytes() == b"tenant-b weights"

    # The refusal reaches the BaseModel: a Ready=False condition with the reason, and a Warning Event.
    await aggregate_once(rig.ctl, NS)
    status = rig.emu.get(API, "basemodels", "tenant-a", "climb")["status"]  # type: ignore[index]
    (ready,) = status["conditions"]
    assert ready["type"] == "Ready" and ready["status"] == "False" and ready["reason"] == "UnsafePath"
    assert ready["lastTransitionTime"]
    events = [e for e in rig.emu.all("v1", "events", "tenant-a") if e["involvedObject"]["name"] == "climb"]
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "UnsafePath")]
    await aggregate_once(rig.ctl, NS)  # unchanged: no second Event, the transition time stays
    again = rig.emu.get(API, "basemodels", "tenant-a", "climb")["status"]  # type: ignore[index]
    assert again["conditions"][0]["lastTransitionTime"] == ready["lastTransitionTime"]
    assert len([e for e in rig.emu.all("v1", "events", "tenant-a") if e["involvedObject"]["name"] == "climb"]) == 1


def test_agent_never_replaces_or_deletes_another_models_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "bucket" / "minilm"
    shutil.copytree(minilm(), source)
    root = tmp_path / "models"
    gopher, sink, _ = make(root)
    owner = gopher_model(f"file://{source}", name="first", storage={"path": "team/shared"})
    gopher.run(task(TaskType.DOWNLOAD, owner))
    assert sink.entries[-1].status == ModelStatus.READY
    marker = (root / "team" / "shared" / AGENT_MARKER).read_text()

    intruder = gopher_model(f"file://{source}", name="second", storage={"path": "team/shared", "key": "x"})
    gopher.run(task(TaskType.DOWNLOAD_OVERRIDE, intruder))
    assert sink.entries[-1].status == ModelStatus.FAILED and sink.entries[-1].reason == "PathInUse"
    assert "BaseModel/team/first" in str(sink.entries[-1].message)
    assert gopher.held_fingerprint(task(TaskType.DELETE, intruder).ref, intruder) is None  # nothing of its own there
    with caplog.at_level(logging.WARNING):
        gopher.run(task(TaskType.DELETE, intruder))
    assert "not deleting" in caplog.text and "BaseModel/team/first" in caplog.text
    assert (root / "team" / "shared" / AGENT_MARKER).read_text() == marker
    assert (root / "team" / "shared" / "config.json").exists()


def service_account_dir(base: Path) -> Path:
    """A projected ServiceAccount volume as the kubelet lays it out: files are links through ``..data``."""
    sa = base / "var" / "run" / "secrets" / "kubernetes.io" / "serviceaccount"
    stamp = sa / "..2026_01_01_00_00_00.000000000"
    stamp.mkdir(parents=True)
    for name, body in (("token", "eyJhbGciOi-agent-token"), ("namespace", "modelferry"), ("ca.crt", "cert")):
        (stamp / name).write_text(body)
        (sa / name).symlink_to(f"..data/{name}")
    (sa / "..data").symlink_to(stamp.name)
    return sa


def test_agent_refuses_to_copy_its_own_service_account_token(tmp_path: Path) -> None:
    sa = service_account_dir(tmp_path / "pod")
    root = tmp_path / "models"
    gopher, sink, _ = make(root, allowed_local_roots=[])  # the default: no local roots
    for uri in ("file:///var/run/secrets/kubernetes.io/serviceaccount", f"file://{sa}", "pvc://claim/x"):
        gopher.run(task(TaskType.DOWNLOAD, gopher_model(uri, name="sa")))
        assert sink.entries[-1].status == ModelStatus.FAILED and sink.entries[-1].reason == "SourceNotAllowed"
    # An allowed root does not let a link or '..' lead out of it.
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "model").symlink_to(sa)
    gopher, sink, _ = make(root, allowed_local_roots=[str(shared)])
    for uri in (f"file://{shared}/model", f"file://{shared}/../pod/var/run/secrets/kubernetes.io/serviceaccount"):
        gopher.run(task(TaskType.DOWNLOAD, gopher_model(uri, name="sa")))
        assert sink.entries[-1].reason == "SourceNotAllowed", sink.entries[-1]
    # A model under the allowed root whose files link to the token is refused by the link policy.
    (shared / "model").unlink()
    write_model(shared / "model", 8)
    (shared / "model" / "token").symlink_to(sa / "token")
    gopher.run(task(TaskType.DOWNLOAD, gopher_model(f"file://{shared}/model", name="sa")))
    assert sink.entries[-1].reason == "UnsafePath"
    assert not [p for p in root.rglob("token")]


async def test_agent_survives_non_utf8_secret_and_masks_only_credentials(rig: Rig) -> None:
    encode = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    secret = {
        "metadata": {"name": "creds", "namespace": "team"},
        "data": {
            "AWS_ACCESS_KEY_ID": encode(b"AKIAEXAMPLEKEY"),
            "AWS_SECRET_ACCESS_KEY": encode(b"s3cr3t-value-xyz"),
            "AWS_DEFAULT_REGION": encode(b"eu-de-frankfurt"),
            "AWS_S3_ENDPOINT": encode(b"https://minio.team-bucket.example"),
            "picture": encode(b"\xff\xfe\x00binary"),  # not used by the agent: ignored
        },
    }
    creds = credentials_from_secret(secret, Credentials())
    assert creds.s3.region == "eu-de-frankfurt"
    line = scrub(
        "region eu-de-frankfurt endpoint https://minio.team-bucket.example key s3cr3t-value-xyz AKIAEXAMPLEKEY"
    )
    assert "eu-de-frankfurt" in line and "minio.team-bucket.example" in line
    assert "s3cr3t-value-xyz" not in line and "AKIAEXAMPLEKEY" not in line

    # A credential that is not text: the model fails with a message naming the key; the agent lives on.
    secret["data"]["AWS_SECRET_ACCESS_KEY"] = encode(b"\xff\xfe\xfd")
    await rig.emu.put_object("v1", "secrets", secret)
    await rig.emu.put_object(API, "basemodels", basemodel("keyed", f"file://{rig.src}/v1", key="creds"))
    entry = await eventually(lambda: rig.entry("team.basemodel.keyed"))
    assert entry["status"] == "Failed" and "AWS_SECRET_ACCESS_KEY" in entry["message"] and "UTF-8" in entry["message"]
    await rig.emu.put_object(API, "basemodels", basemodel("plain", f"file://{rig.src}/v1"))
    assert (await eventually(lambda: rig.entry("team.basemodel.plain")))["status"] in ("Updating", "Ready")
    await eventually(lambda: (rig.entry("team.basemodel.plain") or {}).get("status") == "Ready")
