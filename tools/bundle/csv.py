"""The ClusterServiceVersion, built from manifests/: the Deployment, the RBAC, the CRDs and the examples."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

from modelferry import __version__
from modelferry.controller.config.controller import TRAIN_IMAGE
from tools.bundle.layout import IMAGE, IMAGE_REPOSITORY, PACKAGE, load_all

DESCRIPTION = """\
modelferry moves large ML models and fine-tuning work through Kubernetes. The controller turns custom
resources into Jobs that copy model files between Hugging Face, S3-compatible stores (AWS, MinIO, Ceph,
OpenShift Data Foundation, IBM COS), Oracle OCI Object Storage and node-local disk, verifying every byte;
runs fine-tuning with a sidecar that feeds MLflow and ships the weights back to object storage; and runs
the node agent that caches models on the nodes that should hold them.

* **ModelSync**: copy a model from any store to any store (a `model-source` Secret works too).
* **TrainingRun**: fine-tune a synced model; metrics to MLflow, weights to object storage.
* **BaseModel / ClusterBaseModel**: models the node agent keeps on selected nodes (OME field names).
* **NodeAgent**: where and how the node agent runs. Create one (named `default`) after installing to
  start the agent on your nodes; every field is optional.

Prepare the models directory on each node the agent runs on (see the documentation), then create a
NodeAgent. Documentation: https://github.com/modelferry/modelferry/tree/main/docs
"""

DISPLAY = {
    "ModelSync": "Model Sync",
    "TrainingRun": "Training Run",
    "BaseModel": "Base Model",
    "ClusterBaseModel": "Cluster Base Model",
    "NodeAgent": "Node Agent",
}
# What the controller (or the agent) creates for each kind: the console shows them under the resource.
CREATES: dict[str, list[tuple[str, str]]] = {
    "ModelSync": [("Job", "v1")],
    "TrainingRun": [("Job", "v1"), ("Service", "v1")],
    "BaseModel": [("ConfigMap", "v1")],
    "ClusterBaseModel": [("ConfigMap", "v1")],
    "NodeAgent": [("DaemonSet", "v1")],
}
# OpenShift: the agent mounts its models root from the host, which restricted-v2 forbids; the plain
# manifests ship their own SCC (manifests/agent/openshift-scc.yaml), which a bundle cannot carry.
AGENT_SCC_RULE = {
    "apiGroups": ["security.openshift.io"],
    "resources": ["securitycontextconstraints"],
    "resourceNames": ["hostmount-anyuid"],
    "verbs": ["use"],
}


def _words(name: str) -> str:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return spaced[:1].upper() + spaced[1:]


def _x_descriptors(path: str, schema: dict[str, Any], status: bool) -> list[str]:
    leaf = path.rsplit(".", 1)[-1]
    if status:
        if leaf == "conditions":
            return ["urn:alm:descriptor:io.kubernetes.conditions"]
        if leaf == "phase":
            return ["urn:alm:descriptor:io.kubernetes.phase"]
        return ["urn:alm:descriptor:text"] if schema.get("type") in ("string", "integer", "number") else []
    if schema.get("type") == "boolean":
        return ["urn:alm:descriptor:com.tectonic.ui:booleanSwitch"]
    if leaf == "resources" and {"requests", "limits"} <= set(schema.get("properties") or {}):
        return ["urn:alm:descriptor:com.tectonic.ui:resourceRequirements"]
    if schema.get("enum"):
        return [f"urn:alm:descriptor:com.tectonic.ui:select:{v}" for v in schema["enum"] if v]
    if schema.get("type") in ("integer", "number"):
        return ["urn:alm:descriptor:com.tectonic.ui:number"]
    if schema.get("type") == "string":
        return ["urn:alm:descriptor:com.tectonic.ui:text"]
    return []


def descriptors(schema: dict[str, Any], *, status: bool) -> list[dict[str, Any]]:
    """Spec (two levels) or status (one level) descriptors from a CRD schema's ``spec``/``status``."""
    out: list[dict[str, Any]] = []

    def walk(node: dict[str, Any], prefix: str, depth: int) -> None:
        for name, child in (node.get("properties") or {}).items():
            path = f"{prefix}{name}"
            entry: dict[str, Any] = {"path": path, "displayName": _words(name)}
            if child.get("description"):
                entry["description"] = " ".join(str(child["description"]).split())
            xd = _x_descriptors(path, child, status)
            if xd:
                entry["x-descriptors"] = xd
            out.append(entry)
            nested = child.get("type") == "object" and child.get("properties") and not xd
            if nested and depth < (1 if status else 2):
                walk(child, f"{path}.", depth + 1)

    walk(schema, "", 1)
    return out


def owned_crds(root: Path) -> list[dict[str, Any]]:
    """``spec.customresourcedefinitions.owned``: one entry per served version of every CRD in manifests/crds."""
    owned = []
    for path in sorted((root / "manifests" / "crds").glob("*.yaml")):
        for crd in load_all(path):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                props = schema.get("properties") or {}
                owned.append(
                    {
                        "name": crd["metadata"]["name"],
                        "version": version["name"],
                        "kind": kind,
                        "displayName": DISPLAY.get(kind, _words(kind)),
                        "description": " ".join(str(schema.get("description") or kind).split()),
                        "resources": [{"kind": k, "name": "", "version": v} for k, v in CREATES.get(kind, [])],
                        "specDescriptors": descriptors(props.get("spec") or {}, status=False),
                        "statusDescriptors": descriptors(props.get("status") or {}, status=True),
                    }
                )
    return sorted(owned, key=lambda o: (o["kind"], o["version"]))


def examples(root: Path, kinds: list[str]) -> list[dict[str, Any]]:
    """The first example of every owned kind (manifests/examples, manifests/agent), without namespaces."""
    found: dict[str, dict[str, Any]] = {}
    paths = [*sorted((root / "manifests" / "examples").glob("*.yaml")), root / "manifests" / "agent" / "examples.yaml"]
    paths.append(root / "manifests" / "agent" / "nodeagent.yaml")
    for path in paths:
        for doc in load_all(path):
            if doc.get("kind") in kinds and doc["kind"] not in found:
                example = copy.deepcopy(doc)
                example["metadata"].pop("namespace", None)
                found[doc["kind"]] = example
    return [found[k] for k in kinds if k in found]


def release_images(obj: Any) -> Any:
    """``obj`` with every reference to the modelferry image pinned to this release's tag."""
    if isinstance(obj, dict):
        return {k: release_images(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [release_images(v) for v in obj]
    if isinstance(obj, str) and obj.startswith(IMAGE_REPOSITORY + ":"):
        return IMAGE
    return obj


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def permissions(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(clusterPermissions, permissions) per ServiceAccount, from the controller's and the agent's RBAC."""
    cluster: dict[str, list[dict[str, Any]]] = {}
    namespaced: dict[str, list[dict[str, Any]]] = {}
    for component in ("controller", "agent"):
        docs = load_all(root / "manifests" / component / "rbac.yaml")
        for role_kind, binding_kind, into in (
            ("ClusterRole", "ClusterRoleBinding", cluster),
            ("Role", "RoleBinding", namespaced),
        ):
            roles = {r["metadata"]["name"]: r for r in _by_kind(docs, role_kind)}
            for binding in _by_kind(docs, binding_kind):
                rules = roles[binding["roleRef"]["name"]]["rules"]
                for subject in binding["subjects"]:
                    if subject["kind"] == "ServiceAccount":
                        into.setdefault(subject["name"], []).extend(copy.deepcopy(rules))
    cluster.setdefault("modelferry-agent", []).append(AGENT_SCC_RULE)
    as_list = [
        [{"serviceAccountName": sa, "rules": rules} for sa, rules in sorted(table.items())]
        for table in (cluster, namespaced)
    ]
    return as_list[0], as_list[1]


def controller_deployment(root: Path) -> dict[str, Any]:
    """The controller Deployment of manifests/controller/deployment.yaml, its images pinned to this release."""
    (deployment,) = _by_kind(load_all(root / "manifests" / "controller" / "deployment.yaml"), "Deployment")
    pinned: dict[str, Any] = release_images(deployment)
    return pinned


def metrics_service(root: Path) -> dict[str, Any]:
    """The controller's metrics Service (a bundle may carry Services); OLM puts it in the install namespace."""
    (service,) = _by_kind(load_all(root / "manifests" / "controller" / "deployment.yaml"), "Service")
    service = copy.deepcopy(service)
    service["metadata"].pop("namespace", None)
    return service


def icon(root: Path) -> dict[str, str]:
    data = (root / "tools" / "bundle" / "icon.svg").read_bytes()
    return {"base64data": base64.b64encode(data).decode(), "mediatype": "image/svg+xml"}


def build_csv(root: Path) -> dict[str, Any]:
    """The ClusterServiceVersion of this release."""
    owned = owned_crds(root)
    kinds = sorted({o["kind"] for o in owned})
    deployment = controller_deployment(root)
    cluster_permissions, namespaced_permissions = permissions(root)
    # The console offers to create this after the install: the agent on every node, as the plain manifests run it.
    initial = {"apiVersion": "modelferry.io/v1alpha1", "kind": "NodeAgent", "metadata": {"name": "default"}, "spec": {}}
    annotations = {
        "alm-examples": json.dumps(examples(root, kinds), indent=2),
        "capabilities": "Basic Install",
        "categories": "AI/Machine Learning",
        "containerImage": IMAGE,
        "description": "Moves ML models and fine-tuning work through Kubernetes: sync, cache on nodes, fine-tune.",
        "repository": "https://github.com/modelferry/modelferry",
        "support": "modelferry",
        "operators.operatorframework.io/suggested-namespace": "modelferry",
        "operatorframework.io/initialization-resource": json.dumps(initial),
        "olm.skipRange": f">=0.0.0 <{__version__}",
    }
    return {
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {"name": f"{PACKAGE}.v{__version__}", "annotations": annotations},
        "spec": {
            "displayName": "modelferry",
            "description": DESCRIPTION,
            "version": __version__,
            "maturity": "alpha",
            "minKubeVersion": "1.28.0",
            "provider": {"name": "modelferry", "url": "https://github.com/modelferry/modelferry"},
            "maintainers": [{"name": "modelferry maintainers", "email": "maintainers@modelferry.io"}],
            "links": [
                {"name": "Documentation", "url": "https://github.com/modelferry/modelferry/tree/main/docs"},
                {"name": "Source", "url": "https://github.com/modelferry/modelferry"},
            ],
            "keywords": ["models", "machine learning", "huggingface", "s3", "fine-tuning", "mlflow", "model cache"],
            "icon": [icon(root)],
            # The controller watches every namespace (its rights are cluster-wide), so only AllNamespaces.
            "installModes": [
                {"type": "OwnNamespace", "supported": False},
                {"type": "SingleNamespace", "supported": False},
                {"type": "MultiNamespace", "supported": False},
                {"type": "AllNamespaces", "supported": True},
            ],
            "customresourcedefinitions": {"owned": owned},
            "install": {
                "strategy": "deployment",
                "spec": {
                    "deployments": [
                        {
                            "name": deployment["metadata"]["name"],
                            "label": deployment["metadata"].get("labels") or {},
                            "spec": deployment["spec"],
                        }
                    ],
                    "clusterPermissions": cluster_permissions,
                    "permissions": namespaced_permissions,
                },
            },
            "relatedImages": [
                {"name": "modelferry", "image": IMAGE},
                {"name": "modelferry-train", "image": TRAIN_IMAGE},
            ],
        },
    }
