"""The one home for ensuring owned objects (``modelferry.controller.reconcile.owned``): create, replace on the inputs
hash, adopt an orphan carrying our labels, refuse someone else's; over real HTTP against the API emulator."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from modelferry.controller.kube.client import JOBS, Kube, Resource, build_api_client
from modelferry.controller.kube.ownership import LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, MANAGED_BY
from modelferry.controller.operator.router import Operator
from modelferry.controller.reconcile.owned import OwnedObjects
from tests.servers.kube import KubeEmulator
from tests.servers.kube_controller import NS, Harness, running

DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
OWNER = {
    "apiVersion": "modelferry.io/v1alpha1",
    "kind": "ModelSync",
    "metadata": {"name": "granite", "namespace": NS, "uid": "owner-uid"},
}
KEY = ("ModelSync", NS, "granite")


def job(inputs_hash: str, *, ours: bool = True, name: str = "modelsync-granite") -> dict[str, Any]:
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_OWNER_KIND: "ModelSync", LABEL_OWNER_NAME: "granite"} if ours else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": labels,
            "annotations": {"modelferry.io/inputs-hash": inputs_hash},
        },
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "sync", "image": "x"}]}}},
    }


@pytest.fixture
async def parts() -> AsyncIterator[tuple[Harness, Operator]]:
    async with running(KubeEmulator()) as harness:
        kube = Kube(await build_api_client(api_url=harness.emu.url))
        try:
            yield harness, Operator(kube, harness.settings())
        finally:
            await kube.close()


def posts(harness: Harness, plural: str) -> list[tuple[str, str]]:
    return [r for r in harness.emu.requests if r[0] in ("POST", "PUT", "DELETE") and f"/{plural}" in r[1]]


async def test_creates_a_missing_object_and_caches_it(parts: tuple[Harness, Operator]) -> None:
    harness, op = parts
    owned = OwnedObjects(op, "ModelSync", lambda: {JOBS: op.jobs})
    ensured = await owned.ensure(KEY, OWNER, JOBS, job("h1"), None)
    assert ensured.created and ensured.obj is not None and ensured.refused is None
    assert harness.job("modelsync-granite") is not None
    assert op.jobs[NS].get(NS, "modelsync-granite") is ensured.obj  # a reconcile before the watch event sees it
    assert harness.events("JobCreated")


async def test_an_unchanged_object_is_left_alone(parts: tuple[Harness, Operator]) -> None:
    harness, op = parts
    live = await harness.emu.put_object("batch/v1", "jobs", job("h1"))
    owned = OwnedObjects(op, "ModelSync", lambda: {JOBS: op.jobs})
    ensured = await owned.ensure(KEY, OWNER, JOBS, job("h1"), live)
    assert ensured.obj is live and not ensured.created
    assert posts(harness, "jobs") == []


async def test_changed_inputs_replace_a_job(parts: tuple[Harness, Operator]) -> None:
    harness, op = parts
    live = await harness.emu.put_object("batch/v1", "jobs", job("h1"))
    owned = OwnedObjects(op, "ModelSync", lambda: {JOBS: op.jobs})
    ensured = await owned.ensure(KEY, OWNER, JOBS, job("h2"), live)
    assert ensured.created and ensured.obj is not None
    now = harness.job("modelsync-granite") or {}
    assert now["metadata"]["uid"] != live["metadata"]["uid"]
    assert now["metadata"]["annotations"]["modelferry.io/inputs-hash"] == "h2"
    assert harness.events("JobReplaced") and harness.events("JobCreated")


async def test_an_orphan_with_our_labels_and_inputs_is_adopted(parts: tuple[Harness, Operator]) -> None:
    harness, op = parts
    orphan = await harness.emu.put_object("batch/v1", "jobs", job("h1"))
    owned = OwnedObjects(op, "ModelSync", lambda: {JOBS: op.jobs})
    ensured = await owned.ensure(KEY, OWNER, JOBS, job("h1"), None)  # the cache missed it
    assert ensured.obj is not None and ensured.obj["metadata"]["uid"] == orphan["metadata"]["uid"]
    assert not ensured.created and ensured.refused is None
    assert op.jobs[NS].get(NS, "modelsync-granite") is ensured.obj
    assert not harness.events("JobCreated") and len(op.queue) == 0


async def test_an_orphan_with_other_inputs_is_looked_at_again(parts: tuple[Harness, Operator]) -> None:
    harness, op = parts
    orphan = await harness.emu.put_object("batch/v1", "jobs", job("h1"))
    owned = OwnedObjects(op, "ModelSync", lambda: {JOBS: op.jobs})
    ensured = await owned.ensure(KEY, OWNER, JOBS, job("h2"), None)
    assert ensured.obj is None and ensured.refused is None
    assert KEY in op.queue._due  # the next reconcile finds it in the cache and replaces it
    assert (harness.job("modelsync-granite") or {})["metadata"]["uid"] == orphan["metadata"]["uid"]


@pytest.mark.parametrize("cached", [True, False])
async def test_someone_elses_object_is_refused_and_untouched(parts: tuple[Harness, Operator], cached: bool) -> None:
    harness, op = parts
    foreign = await harness.emu.put_object("batch/v1", "jobs", job("h1", ours=False))
    owned = OwnedObjects(op, "ModelSync", lambda: {JOBS: op.jobs}, recheck_refused=30.0)
    ensured = await owned.ensure(KEY, OWNER, JOBS, job("h2"), foreign if cached else None)
    assert ensured.obj is None and ensured.refused is not None
    assert ensured.refused["metadata"]["uid"] == foreign["metadata"]["uid"]
    [event] = harness.events("JobNotManaged")
    assert event["type"] == "Warning" and "was not created by modelferry" in event["message"]
    assert (harness.job("modelsync-granite") or {})["metadata"]["uid"] == foreign["metadata"]["uid"]
    assert [m for m, _ in posts(harness, "jobs")] == ([] if cached else ["POST"])  # the refused create only
    assert KEY in op.queue._due  # looked at again: its removal is not watched


async def test_deployments_are_updated_in_place(parts: tuple[Harness, Operator]) -> None:
    harness, op = parts
    deployment = copy.deepcopy(job("h1", name="granite"))
    deployment.update(apiVersion="apps/v1", kind="Deployment")
    live = await harness.emu.put_object("apps/v1", "deployments", deployment)
    owned = OwnedObjects(op, "ModelSync", lambda: {}, in_place=True, event_noun=None)
    desired = copy.deepcopy(deployment)
    desired["metadata"]["annotations"]["modelferry.io/inputs-hash"] = "h2"
    ensured = await owned.ensure(KEY, OWNER, DEPLOYMENTS, desired, live)
    now = harness.emu.get("apps/v1", "deployments", NS, "granite") or {}
    assert now["metadata"]["uid"] == live["metadata"]["uid"]  # the same object: Kubernetes rolls it
    assert now["metadata"]["annotations"]["modelferry.io/inputs-hash"] == "h2"
    assert ensured.obj is not None and not ensured.created
    assert [m for m, _ in posts(harness, "deployments")] == ["PUT"]
    assert harness.events("DeploymentUpdated")


async def test_delete_removes_only_what_is_ours(parts: tuple[Harness, Operator]) -> None:
    harness, op = parts
    ours = await harness.emu.put_object("batch/v1", "jobs", job("h1"))
    theirs = await harness.emu.put_object("batch/v1", "jobs", job("h1", ours=False, name="other"))
    owned = OwnedObjects(op, "ModelSync", lambda: {JOBS: op.jobs})
    assert not await owned.delete(JOBS, "granite", theirs)
    assert harness.job("other") is not None
    assert await owned.delete(JOBS, "granite", ours)
    assert harness.job("modelsync-granite") is None
