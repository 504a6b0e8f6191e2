"""The API behaviours the controller and agent suites rely on, pinned on the emulator and the real server alike.

Both backends answer the same raw HTTP here; where the emulator drifts from kube-apiserver, this fails on the
emulator's half (with ``KUBEBUILDER_ASSETS`` set the real half shows what the right answer is).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.servers.kube import KubeEmulator
from tests.servers.kube_real import RealKube

NS = "demo"
API = "modelferry.io/v1alpha1"
SECRETS = f"/api/v1/namespaces/{NS}/secrets"
MODELSYNCS = f"/apis/{API}/namespaces/{NS}/modelsyncs"
MERGE = {"Content-Type": "application/merge-patch+json"}


class Client:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url, self.session = url, session

    async def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, dict[str, Any]]:
        async with self.session.request(method, self.url + path, json=body, headers=headers or None) as resp:
            return resp.status, await resp.json(content_type=None)


@pytest.fixture
async def api(kube_backend: Callable[..., Any]) -> AsyncIterator[Client]:
    backend: KubeEmulator | RealKube = kube_backend(role="admin")
    await backend.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(backend.url, session)
    finally:
        await backend.stop()


def secret(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels},
            "stringData": {"k": "v"}}  # fmt: skip


def a_modelsync(name: str = "contract") -> dict[str, Any]:
    spec = {"source": {"uri": "hf://org/model"}, "target": {"dataConnection": "dc", "path": "models/"}}
    return {"apiVersion": API, "kind": "ModelSync", "metadata": {"name": name}, "spec": spec}


async def test_create_fills_metadata_and_turns_string_data_into_data(api: Client) -> None:
    code, created = await api.call("POST", SECRETS, secret("c1"))
    assert code == 201
    meta = created["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"] and meta["namespace"] == NS
    assert created["data"] == {"k": base64.b64encode(b"v").decode()} and "stringData" not in created
    code, again = await api.call("POST", SECRETS, secret("c1"))
    assert code == 409 and again["reason"] == "AlreadyExists"
    code, _ = await api.call("GET", f"{SECRETS}/missing")
    assert code == 404


async def test_stale_resource_version_conflicts(api: Client) -> None:
    _, created = await api.call("POST", SECRETS, secret("c2"))
    fresh = {**created, "data": {"k": base64.b64encode(b"w").decode()}}
    code, updated = await api.call("PUT", f"{SECRETS}/c2", fresh)
    assert code == 200 and updated["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    code, conflict = await api.call("PUT", f"{SECRETS}/c2", fresh)  # still carries the old resourceVersion
    assert code == 409 and conflict["reason"] == "Conflict"


async def test_generation_follows_spec_and_status_is_a_subresource(api: Client) -> None:
    code, created = await api.call("POST", MODELSYNCS, a_modelsync())
    assert code == 201 and created["metadata"]["generation"] == 1
    path = f"{MODELSYNCS}/contract"
    code, patched = await api.call("PATCH", f"{path}/status", {"status": {"phase": "Pending"}}, **MERGE)
    assert code == 200 and patched["status"]["phase"] == "Pending" and patched["metadata"]["generation"] == 1
    code, ignored = await api.call("PATCH", path, {"status": {"phase": "Failed"}}, **MERGE)
    assert code == 200 and ignored["status"]["phase"] == "Pending"  # the main resource ignores status
    code, edited = await api.call("PATCH", path, {"spec": {"target": {"path": "other/"}}}, **MERGE)
    assert edited["metadata"]["generation"] == 2 and edited["status"]["phase"] == "Pending"


async def test_merge_patch_null_removes_a_key(api: Client) -> None:
    await api.call("POST", SECRETS, secret("c3", a="1", b="2"))
    code, patched = await api.call("PATCH", f"{SECRETS}/c3", {"metadata": {"labels": {"a": None}}}, **MERGE)
    assert code == 200 and patched["metadata"]["labels"] == {"b": "2"}


async def test_label_selectors_and_watch_from_a_list(api: Client) -> None:
    await api.call("POST", SECRETS, secret("sel-a", app="x"))
    await api.call("POST", SECRETS, secret("sel-b", app="x", skip="1"))
    await api.call("POST", SECRETS, secret("sel-c", app="y"))
    _, listed = await api.call("GET", f"{SECRETS}?labelSelector=app%3Dx%2C%21skip")
    assert [o["metadata"]["name"] for o in listed["items"]] == ["sel-a"]
    rv = listed["metadata"]["resourceVersion"]
    url = f"{api.url}{SECRETS}?watch=true&resourceVersion={rv}&labelSelector=app%3Dx&timeoutSeconds=10"
    async with api.session.get(url) as stream:
        await api.call("PATCH", f"{SECRETS}/sel-a", {"metadata": {"annotations": {"n": "1"}}}, **MERGE)
        await api.call("PATCH", f"{SECRETS}/sel-c", {"metadata": {"annotations": {"n": "1"}}}, **MERGE)
        await api.call("DELETE", f"{SECRETS}/sel-a")
        seen: list[tuple[str, str]] = []
        async with asyncio.timeout(10):
            while len(seen) < 2:
                event = json.loads(await stream.content.readline())
                if event["type"] != "BOOKMARK":
                    seen.append((event["type"], event["object"]["metadata"]["name"]))
    assert seen == [("MODIFIED", "sel-a"), ("DELETED", "sel-a")]


async def test_generate_name(api: Client) -> None:
    body = secret("")
    body["metadata"] = {"generateName": "gen-"}
    code, created = await api.call("POST", SECRETS, body)
    assert code == 201 and created["metadata"]["name"].startswith("gen-") and len(created["metadata"]["name"]) > 4
