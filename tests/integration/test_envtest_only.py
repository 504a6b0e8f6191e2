"""What only a real API server can show: RBAC, Pod Security, CRD validation, garbage collection, restarts.

Each test runs the components under their own ServiceAccount tokens against the session's control plane
(``cluster`` in conftest.py) in a namespace of its own; without ``KUBEBUILDER_ASSETS`` they all skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import AGENT_NODE, ROOT, Cluster, apply, install
from tests.integration.test_controller_modelsync import HF, modelsync
from tests.integration.test_controller_modelsync import TARGET as MS_TARGET
from tests.integration.test_controller_secret import S3_SOURCE, TARGET, source_secret
from tests.integration.test_controller_training import trainingrun
from tests.servers.envtest import ApiError
from tests.servers.kube_controller import Harness, eventually, running
from tests.servers.kube_real import RealKube

pytestmark = pytest.mark.envtest
API = "modelferry.io/v1alpha1"
INSTALL_NS = "modelferry"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def in_ns(obj: dict[str, Any], ns: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"]["namespace"] = ns
    return out


@contextlib.asynccontextmanager
async def controller_in(
    cluster: Cluster, ns: str, token: str | None = None, *, start: bool = True
) -> AsyncIterator[Harness]:
    """A controller watching ``ns`` only, as the modelferry-controller ServiceAccount (or ``token``)."""
    cluster.plane.ensure_namespace(ns)
    backend = RealKube(cluster.plane, token=token or cluster.controller_token, namespaces=(ns,))
    async with running(backend) as h:
        if start:
            await h.start(namespaces=[ns], leader_election=False, training={"progress_seconds": 0.2})
        yield h


def real(h: Harness) -> RealKube:
    assert isinstance(h.emu, RealKube)
    return h.emu


# --- RBAC ---------------------------------------------------------------------------------------------------
def without_verb(rules: list[dict[str, Any]], resource: str, verb: str) -> list[dict[str, Any]]:
    out = copy.deepcopy(rules)
    for rule in out:
        if resource in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    return [r for r in out if r["verbs"]]


async def test_controller_role_missing_a_verb_is_refused(cluster: Cluster) -> None:
    """The suites prove the shipped ClusterRole suffices (any 403 fails them); this proves they would notice."""
    role = next(
        o for o in cluster.overlay if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "modelferry-controller"
    )
    name = "modelferry-controller-no-job-create"
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": INSTALL_NS}]
    apply(cluster.plane, [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": INSTALL_NS}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": without_verb(role["rules"], "jobs", "create")},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}, "subjects": subject},
    ])  # fmt: skip
    token = cluster.plane.service_account_token(INSTALL_NS, name)
    ns = "rbac-narrow"
    async with controller_in(cluster, ns, token, start=False) as h:
        await h.apply(in_ns(TARGET, ns))
        await h.apply(in_ns(source_secret(S3_SOURCE), ns))
        # Only the ClusterRole is narrowed: the Roles in the install namespace (NodeAgent DaemonSets) are not bound.
        await h.start(namespaces=[ns], leader_election=False, node_agent={"enabled": False})
        denied = await eventually(lambda: [d for d in real(h).denied if d[0] == "POST" and "/jobs" in d[1]])
        assert 'cannot create resource "jobs"' in denied[0][2]
        assert real(h).get("batch/v1", "jobs", ns, "synchronize-model") is None
        real(h).denied.clear()  # expected here; any other refusal still fails the test at teardown


# --- Pod Security -------------------------------------------------------------------------------------------
def dry_run_pod(cluster: Cluster, ns: str, template: dict[str, Any]) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "psa-", "namespace": ns},
           "spec": template["spec"]}  # fmt: skip
    cluster.plane.request("POST", f"/api/v1/namespaces/{ns}/pods?dryRun=All", pod)


async def test_every_rendered_pod_passes_restricted(cluster: Cluster) -> None:
    ns = "psa-restricted"
    cluster.plane.ensure_namespace(ns, labels=RESTRICTED)
    async with controller_in(cluster, ns, start=False) as h:
        for secret in (TARGET, MS_TARGET, HF, source_secret(S3_SOURCE)):
            await h.apply(in_ns(secret, ns))
        await h.apply(in_ns(modelsync(), ns), API, "modelsyncs")
        await h.apply(in_ns(trainingrun(), ns), API, "trainingruns")
        await h.apply(in_ns(trainingrun("dist", distributed={"workers": 2}), ns), API, "trainingruns")
        await h.start(namespaces=[ns], leader_election=False)
        names = ("synchronize-model", "modelsync-granite", "qwen-lora-train", "dist-train")
        jobs = await eventually(
            lambda: (
                all(real(h).get("batch/v1", "jobs", ns, n) for n in names)
                and [real(h).get("batch/v1", "jobs", ns, n) for n in names]
            ),
            timeout=30,
        )
        for job in jobs:
            dry_run_pod(cluster, ns, job["spec"]["template"])  # raises 403 on a violation
    # The namespace really enforces: a plain Pod is refused.
    with pytest.raises(ApiError) as refused:
        dry_run_pod(cluster, ns, {"spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    assert refused.value.code == 403 and 'violates PodSecurity "restricted' in str(refused.value)


def test_agent_daemonset_is_the_documented_exception(cluster: Cluster) -> None:
    """The node agent writes the host's model folder: restricted refuses it, its own namespace admits it."""
    ds = next(o for o in cluster.overlay if o["kind"] == "DaemonSet")
    cluster.plane.ensure_namespace("psa-agent", labels=RESTRICTED)
    with pytest.raises(ApiError) as refused:
        dry_run_pod(cluster, "psa-agent", ds["spec"]["template"])
    assert "hostPath" in str(refused.value)
    dry_run_pod(cluster, INSTALL_NS, ds["spec"]["template"])  # the install namespace's level admits it


# --- CRD validation -----------------------------------------------------------------------------------------
def examples() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / "manifests" / "examples").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    return docs


CLUSTER_SCOPED = {"Namespace", "ClusterBaseModel", "NodeAgent"}


def create(cluster: Cluster, obj: dict[str, Any], ns: str, dry_run: bool = True) -> Any:
    api, plural = obj["apiVersion"], obj["kind"].lower() + "s"
    base = "/api/v1" if api == "v1" else f"/apis/{api}"
    query = "?dryRun=All&fieldValidation=Strict" if dry_run else ""
    if obj["kind"] in CLUSTER_SCOPED:  # the quickstart's Namespace: created where it is, not in ``ns``
        try:
            return cluster.plane.request("POST", f"{base}/{plural}{query}", obj)
        except ApiError as exc:
            if exc.code != 409:  # already there (the controller suites use "demo" too): validated, then refused
                raise
            return None
    return cluster.plane.request("POST", f"{base}/namespaces/{ns}/{plural}{query}", in_ns(obj, ns))


def test_every_shipped_example_is_accepted(cluster: Cluster) -> None:
    cluster.plane.ensure_namespace("examples")
    docs = examples()
    assert {d["kind"] for d in docs} >= {"Secret", "ModelSync", "TrainingRun"}
    for doc in docs:
        create(cluster, doc, "examples")  # strict field validation: unknown fields fail too


@pytest.mark.parametrize(
    ("kind", "spec", "message"),
    [
        ("ModelSync", {"target": {"path": "models/"}}, "set target.uri or target.dataConnection"),
        ("ModelSync", {"source": None}, "spec.source: Required value"),
        ("TrainingRun", {"trainer": {"runtime": "nope"}}, 'spec.trainer.runtime: Unsupported value: "nope"'),
        ("TrainingRun", {"distributed": {"workers": 0}}, "spec.distributed.workers: Invalid value: 0"),
        ("TrainingRun", {"output": {}}, "spec.output.uri: Required value"),
    ],
)
def test_crd_rejects_invalid_objects(cluster: Cluster, kind: str, spec: dict[str, Any], message: str) -> None:
    obj = modelsync() if kind == "ModelSync" else trainingrun()
    for key, value in spec.items():
        if value is None:
            obj["spec"].pop(key)
        else:
            obj["spec"][key] = value
    cluster.plane.ensure_namespace("examples")
    with pytest.raises(ApiError) as rejected:
        create(cluster, obj, "examples")
    assert rejected.value.code == 422 and message in str(rejected.value)


# --- garbage collection -------------------------------------------------------------------------------------
async def test_owner_references_let_the_garbage_collector_remove_jobs_and_services(cluster: Cluster) -> None:
    if not cluster.plane.want_kcm:
        pytest.skip("KUBEBUILDER_ASSETS has no kube-controller-manager: no garbage collector")
    ns = "gc"
    async with controller_in(cluster, ns, start=False) as h:
        await h.apply(in_ns(TARGET, ns))
        await h.apply(in_ns(source_secret(S3_SOURCE), ns))
        await h.apply(in_ns(trainingrun(distributed={"workers": 2}), ns), API, "trainingruns")
        controller = await h.start(namespaces=[ns], leader_election=False)
        await eventually(lambda: real(h).get("batch/v1", "jobs", ns, "synchronize-model"))
        await eventually(lambda: real(h).get("v1", "services", ns, "qwen-lora-train"))
        await eventually(lambda: real(h).get("batch/v1", "jobs", ns, "qwen-lora-train"))
        assert await h.stop(controller) == 0  # only the garbage collector is left to act
        plane = cluster.plane
        plane.request("DELETE", f"/api/v1/namespaces/{ns}/secrets/model-source")
        plane.request("DELETE", f"/apis/{API}/namespaces/{ns}/trainingruns/qwen-lora")
        await eventually(lambda: real(h).get("batch/v1", "jobs", ns, "synchronize-model") is None, timeout=60)
        await eventually(lambda: real(h).get("batch/v1", "jobs", ns, "qwen-lora-train") is None, timeout=60)
        await eventually(lambda: real(h).get("v1", "services", ns, "qwen-lora-train") is None, timeout=60)


# --- admission policy ---------------------------------------------------------------------------------------
def agent_policies(cluster: Cluster) -> list[dict[str, Any]]:
    return [o for o in cluster.overlay if o["kind"] == "ValidatingAdmissionPolicy" and "agent" in o["metadata"]["name"]]


def test_agent_may_only_touch_its_own_node_labels(cluster: Cluster) -> None:
    """The agent's token is bound to a pod on ``AGENT_NODE``: that Node's ``models.modelferry.io/`` labels only."""
    if not agent_policies(cluster):
        pytest.skip("no ValidatingAdmissionPolicy for the agent's node labels in the dev overlay yet")
    plane, merge = cluster.plane, "application/merge-patch+json"
    for name in (AGENT_NODE, "other-node"):
        with contextlib.suppress(ApiError):
            plane.request("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})

    def patch(node: str, labels: dict[str, Any], token: str | None = cluster.agent_token) -> Any:
        body = {"metadata": {"labels": labels}}
        return plane.request("PATCH", f"/api/v1/nodes/{node}", body, token=token, content_type=merge)

    own = {"models.modelferry.io/team.basemodel.vap": "Ready"}
    patch(AGENT_NODE, own)  # its own node, its own prefix
    refusals = {
        "another node": lambda: patch("other-node", own),
        "a label outside the prefix": lambda: patch(AGENT_NODE, {"zone": "b"}),
    }
    for what, attempt in refusals.items():
        with pytest.raises(ApiError) as refused:
            attempt()
        assert refused.value.code in (403, 422), what
        assert "modelferry agent" in str(refused.value), what
    patch(AGENT_NODE, dict.fromkeys(own), token=None)  # the admin tidies up
    plane.request("DELETE", "/api/v1/nodes/other-node")


# --- an API server restart ------------------------------------------------------------------------------------
async def test_apiserver_restart_mid_watch_resumes_without_duplicate_job(cluster: Cluster) -> None:
    ns = "restart"
    async with controller_in(cluster, ns, start=False) as h:
        for secret in (MS_TARGET, HF):
            await h.apply(in_ns(secret, ns))
        await h.apply(in_ns(modelsync(), ns), API, "modelsyncs")
        controller = await h.start(namespaces=[ns], leader_election=False, watch_timeout_seconds=300)
        await eventually(lambda: real(h).get("batch/v1", "jobs", ns, "modelsync-granite"))
        await asyncio.to_thread(cluster.plane.restart_apiserver)  # every watch breaks; back on the same port
        await h.apply(in_ns(modelsync("second"), ns), API, "modelsyncs")
        task = h.controllers[-1][2]
        second = await eventually(lambda: task.done() or real(h).get("batch/v1", "jobs", ns, "modelsync-second"), 30)
        assert not task.done(), f"the controller ended on the restart: {task.exception()!r}"
        assert second
        posts = [p for m, p, *_ in h.emu.requests if m == "POST" and p.endswith("/jobs")]
        assert len(posts) == 2, posts  # one per ModelSync: the first Job was not created again
        assert controller.ready()
        assert await h.stop(controller) == 0
        # A restarted kube-apiserver answers 403 until its RBAC cache has synced; the controller retried them.
        real(h).denied.clear()


# --- OLM: the bundle's ClusterServiceVersion against OLM's own CRD ------------------------------------------
async def test_the_bundles_csv_is_accepted_by_olms_crd_and_a_broken_one_is_not(cluster: Cluster) -> None:
    from tools.bundle.validate import find_csv, olm_schema_path

    olm_crd_path = olm_schema_path()
    if not olm_crd_path.is_file():
        pytest.skip(f"OLM's ClusterServiceVersion CRD is not at {olm_crd_path} (../shared/olm beside the checkout)")
    olm_crd = [d for d in yaml.safe_load_all(olm_crd_path.read_text()) if d]
    install(cluster.plane, olm_crd)
    ns = "olm-csv"
    cluster.plane.ensure_namespace(ns)
    csv = yaml.safe_load(find_csv(ROOT / "bundle").read_text())
    csv["metadata"]["namespace"] = ns
    path = f"/apis/operators.coreos.com/v1alpha1/namespaces/{ns}/clusterserviceversions?dryRun=All"
    accepted = cluster.plane.request("POST", path + "&fieldValidation=Strict", csv)
    assert accepted["metadata"]["name"] == csv["metadata"]["name"]
    broken = copy.deepcopy(csv)
    broken["spec"]["installModes"][0]["supported"] = "yes"  # a boolean in OLM's schema
    del broken["spec"]["install"]["strategy"]
    with pytest.raises(ApiError) as refused:
        cluster.plane.request("POST", path, broken)
    assert refused.value.code == 422
    # every alm-example is a valid object of the CRDs the bundle owns
    for shipped in yaml.safe_load(csv["metadata"]["annotations"]["alm-examples"]):
        create(cluster, shipped, ns)
