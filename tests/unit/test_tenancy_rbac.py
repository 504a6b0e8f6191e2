"""RBAC and admission for a shared cluster: rendered with ``kubectl kustomize``, checked offline.

The node-label ValidatingAdmissionPolicy's CEL is evaluated here with a CEL interpreter against the
admission requests an attacker (or a confused agent) would send; a real API server applies it in the
envtest tier.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import kubernetes_validate
import pytest
from celpy import celtypes, json_to_cel

from tests.unit.test_manifests import K8S, ROOT, docs, kustomize

AGENT = "system:serviceaccount:modelferry:modelferry-agent"
NODE_KEY = "authentication.kubernetes.io/node-name"


def rules_granting(objects: list[dict[str, Any]], resource: str) -> list[tuple[str, str | None, str]]:
    """(kind, namespace, name) of every Role/ClusterRole with a rule on ``resource``."""
    found = []
    for obj in objects:
        rules = obj.get("rules") or []
        if obj["kind"] in ("Role", "ClusterRole") and any(resource in (r.get("resources") or []) for r in rules):
            found.append((obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]))
    return sorted(found, key=str)


def test_namespaced_install_grants_secrets_only_in_listed_namespaces() -> None:
    objects = kustomize(ROOT / "kustomize" / "overlays" / "namespaced")
    for obj in objects:
        if obj["apiVersion"].startswith(("rbac.", "admissionregistration.")):
            kubernetes_validate.validate(obj, K8S, strict=True)
    secrets = rules_granting(objects, "secrets")
    assert not [r for r in secrets if r[0] == "ClusterRole"], secrets
    assert {(ns, name) for _, ns, name in secrets} == {
        (ns, name) for ns in ("team-a", "team-b") for name in ("modelferry-controller", "modelferry-agent-secrets")
    }
    for kind in ("jobs", "pods", "events"):
        assert all(r[0] == "Role" and r[1] in ("team-a", "team-b") for r in rules_granting(objects, kind)), kind
    bindings = {(o["metadata"]["namespace"], o["roleRef"]["name"]): o["subjects"] for o in objects
                if o["kind"] == "RoleBinding"}  # fmt: skip
    for ns in ("team-a", "team-b"):
        assert bindings[(ns, "modelferry-controller")] == [
            {"kind": "ServiceAccount", "name": "modelferry-controller", "namespace": "modelferry"}
        ]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELFERRY_CONTROLLER__NAMESPACES"] == '["team-a", "team-b"]'


def test_tenant_role_keeps_up_with_the_cluster_wide_role() -> None:
    """The namespaced Role grants what the cluster-wide install grants per namespace (no drift)."""
    cluster = next(d for d in docs(ROOT / "manifests" / "controller" / "rbac.yaml") if d["kind"] == "ClusterRole")
    tenant = next(d for d in docs(ROOT / "kustomize" / "components" / "namespaced" / "tenant" / "roles.yaml")
                  if d["metadata"]["name"] == "modelferry-controller")  # fmt: skip
    models = next(d for d in docs(ROOT / "kustomize" / "components" / "namespaced" / "cluster.yaml")
                  if d["kind"] == "ClusterRole")  # fmt: skip
    assert sorted(map(str, tenant["rules"] + models["rules"])) == sorted(map(str, cluster["rules"]))


def test_controller_lists_configmaps_only_in_the_agent_namespace() -> None:
    """The BaseModel roll-up needs the agents' ConfigMaps, not every tenant's ConfigMaps."""
    for overlay in ("base", "overlays/namespaced"):
        objects = kustomize(ROOT / "kustomize" / overlay)
        assert rules_granting(objects, "configmaps") == [
            ("Role", "modelferry", "modelferry-agent"),
            ("Role", "modelferry", "modelferry-controller-agent-status"),
        ], overlay


# -- the agent's node-label admission policy ---------------------------------------------------------------


def policy(name: str = "modelferry-agent-node-labels") -> dict[str, Any]:
    objects = kustomize(ROOT / "kustomize" / "base")
    vap = next(o for o in objects if o["kind"] == "ValidatingAdmissionPolicy" and o["metadata"]["name"] == name)
    binding = next(
        o for o in objects if o["kind"] == "ValidatingAdmissionPolicyBinding" and o["metadata"]["name"] == name
    )
    assert binding["spec"] == {"policyName": name, "validationActions": ["Deny"]}
    assert (ROOT / "manifests" / "agent" / "node-label-policy.yaml").exists()
    return vap


def admit(vap: dict[str, Any], request: dict[str, Any], old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """None if the policy lets the request through (or does not apply), else its message."""
    spec = vap["spec"]
    rule = spec["matchConstraints"]["resourceRules"][0]
    if request["operation"] not in rule["operations"] or request["resource"] not in rule["resources"]:
        return None
    env = celpy.Environment()
    act: dict[str, Any] = {
        "request": json_to_cel(request),
        "object": json_to_cel(new),
        "oldObject": json_to_cel(old),
        "variables": celtypes.MapType({}),
    }

    def run(expression: str) -> Any:
        return env.program(env.compile(expression)).evaluate(act)

    if not all(run(c["expression"]) for c in spec.get("matchConditions") or []):
        return None
    variables = {}
    for var in spec.get("variables") or []:
        variables[celtypes.StringType(var["name"])] = run(var["expression"])
        act["variables"] = celtypes.MapType(variables)
    for check in spec["validations"]:
        if not run(check["expression"]):
            return str(run(check["messageExpression"])) if "messageExpression" in check else check["message"]
    return None


def node(name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": spec}


def request(
    user: str = AGENT,
    bound: str | None = "node-1",
    *,
    operation: str = "UPDATE",
    resource: str = "nodes",
    name: str = "",
) -> dict[str, Any]:
    extra = {NODE_KEY: [bound]} if bound else {}
    return {"operation": operation, "resource": resource, "name": name, "userInfo": {"username": user, "extra": extra}}


BASE = {"kubernetes.io/hostname": "node-1", "models.modelferry.io/demo.basemodel.old": "Ready"}


def test_agent_changes_its_own_model_labels() -> None:
    vap = policy()
    new = {**BASE, "models.modelferry.io/demo.basemodel.llama": "Updating"}
    del new["models.modelferry.io/demo.basemodel.old"]
    assert admit(vap, request(), node("node-1", BASE), node("node-1", new)) is None


@pytest.mark.parametrize(
    ("attack", "req", "old", "new", "says"),
    [
        ("another node", request(bound="node-2"), node("node-1", BASE),
         node("node-1", {**BASE, "models.modelferry.io/x": "Ready"}), "may not change Node node-1"),
        ("token not bound to a pod", request(bound=None), node("node-1", BASE),
         node("node-1", {**BASE, "models.modelferry.io/x": "Ready"}), "token bound to its pod"),
        ("label outside its prefix", request(), node("node-1", BASE),
         node("node-1", {**BASE, "node-role.kubernetes.io/control-plane": ""}), "only labels under"),
        ("steer workloads by relabelling", request(), node("node-1", BASE),
         node("node-1", {**BASE, "kubernetes.io/hostname": "node-9"}), "only labels under"),
        ("remove a foreign label", request(), node("node-1", BASE),
         node("node-1", {"models.modelferry.io/demo.basemodel.old": "Ready"}), "only labels under"),
        ("untaint its node", request(), node("node-1", BASE, taints=[{"key": "gpu", "effect": "NoSchedule"}]),
         node("node-1", BASE), "not spec, taints"),
        ("block node deletion", request(), node("node-1", BASE),
         {**node("node-1", BASE), "metadata": {**node("node-1", BASE)["metadata"], "finalizers": ["x/y"]}},
         "finalizers"),
    ],
)  # fmt: skip
def test_agent_token_cannot_touch_other_nodes_or_labels(
    attack: str, req: dict[str, Any], old: dict[str, Any], new: dict[str, Any], says: str
) -> None:
    message = admit(policy(), req, old, new)
    assert message is not None and says in message, attack


def test_policy_leaves_other_users_alone() -> None:
    vap = policy()
    old, new = node("node-1", BASE), node("node-1", {"team": "x"}, unschedulable=True)
    assert admit(vap, request(user="system:node:node-1", bound=None), old, new) is None
    broken = copy.deepcopy(vap)
    broken["spec"]["matchConditions"][0]["expression"] = "true"
    assert admit(broken, request(user="kubernetes-admin", bound=None), old, new) is not None  # the test can fail


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE", "DELETE"])
def test_agent_writes_only_its_own_nodes_configmap(operation: str) -> None:
    """Each node's agent reports in the ConfigMap named after its node: it cannot rewrite another node's report."""
    vap = policy("modelferry-agent-node-configmap")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "node-1"}, "data": {}}
    own = request(operation=operation, resource="configmaps", name="node-1")
    assert admit(vap, own, cm, cm) is None
    other = request(bound="node-2", operation=operation, resource="configmaps", name="node-1")
    message = admit(vap, other, cm, cm)
    assert message is not None and "may write only the ConfigMap named after its node" in message
    unbound = request(bound=None, operation=operation, resource="configmaps", name="node-1")
    assert admit(vap, unbound, cm, cm) is not None
