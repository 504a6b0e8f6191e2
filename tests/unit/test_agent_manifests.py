"""Agent manifests: CRD schemas accept the examples (and reject bad ones), the DaemonSet and RBAC are sane."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def crd_schema(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "manifests" / "crds" / name).read_text())
    return strip_k8s(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def strip_k8s(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip_k8s(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if isinstance(node, list):
        return [strip_k8s(v) for v in node]
    return node


def examples() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "manifests" / "agent" / "examples.yaml").read_text()) if d]


def test_examples_validate_against_their_crds() -> None:
    schemas = {"BaseModel": crd_schema("basemodel.yaml"), "ClusterBaseModel": crd_schema("clusterbasemodel.yaml")}
    docs = examples()
    assert {d["kind"] for d in docs} == set(schemas)
    for doc in docs:
        jsonschema.validate(doc, schemas[doc["kind"]])


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"storage": {}},
        {"storage": {"storageUri": "ftp://nope"}},
        {"storage": {"storageUri": "hf://a/b", "nodeSelector": {"zone": 1}}},
    ],
)
def test_invalid_models_are_rejected(spec: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"apiVersion": "modelferry.io/v1alpha1", "kind": "BaseModel", "spec": spec}, crd_schema("basemodel.yaml")
        )


def test_crd_scopes_and_status_subresource() -> None:
    bm = yaml.safe_load((ROOT / "manifests" / "crds" / "basemodel.yaml").read_text())
    cbm = yaml.safe_load((ROOT / "manifests" / "crds" / "clusterbasemodel.yaml").read_text())
    assert bm["spec"]["scope"] == "Namespaced" and cbm["spec"]["scope"] == "Cluster"
    for crd in (bm, cbm):
        assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}
        status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        assert {"nodesReady", "nodesFailed", "state"} <= set(status)


def built() -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed; cannot build the kustomization")
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "kustomize" / "base" / "agent")], capture_output=True, text=True, check=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_daemonset_and_rbac_are_least_privilege() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in built()}
    ds = docs[("DaemonSet", "modelferry-agent")]
    pod = ds["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {p["httpGet"]["path"] for p in (container["readinessProbe"], container["livenessProbe"])} == {
        "/readyz",
        "/livez",
    }
    assert pod["volumes"][0]["hostPath"]["path"] == "/mnt/models"
    rules = docs[("ClusterRole", "modelferry-agent")]["rules"]
    node_rule = next(r for r in rules if "nodes" in r["resources"])
    assert set(node_rule["verbs"]) == {"get", "patch"}
    assert all("*" not in r["verbs"] and "delete" not in r["verbs"] for r in rules)
    assert not any("configmaps" in r["resources"] for r in rules)  # ConfigMaps only in the agent's namespace
    assert "configmaps" in docs[("Role", "modelferry-agent")]["rules"][0]["resources"]
