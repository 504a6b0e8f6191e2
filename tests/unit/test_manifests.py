"""Manifests and kustomize overlays render, validate against Kubernetes 1.33, and examples fit their CRDs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelferry.cli.main import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = [
    "base",
    "overlays/dev",
    "overlays/openshift",
    "overlays/openshift-internal-registry",
    "overlays/rhoai-poc",
    "overlays/namespaced",
]
K8S = "1.33.0"
BUILTIN_GROUPS = (
    "",
    "v1",
    "apps",
    "batch",
    "rbac.authorization.k8s.io",
    "apiextensions.k8s.io",
    "coordination.k8s.io",
    "admissionregistration.k8s.io",
)


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: cannot render kustomize overlays")
    out = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def is_builtin(obj: dict[str, Any]) -> bool:
    group = obj["apiVersion"].rpartition("/")[0]
    return group in BUILTIN_GROUPS


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in (ROOT / "manifests" / "crds").glob("*.yaml"):
        for crd in docs(path):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            for version in crd["spec"]["versions"]:
                api = f"{crd['spec']['group']}/{version['name']}"
                schemas[(api, crd["spec"]["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return schemas


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(overlay: str) -> None:
    objects = kustomize(ROOT / "kustomize" / overlay)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "Deployment"} <= kinds
    for obj in objects:
        if is_builtin(obj):
            kubernetes_validate.validate(obj, K8S, strict=True)
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "modelferry-controller"
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] in SUBCOMMANDS
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "runAsUser" not in container["securityContext"]


def test_dev_overlay_uses_the_local_image_everywhere() -> None:
    objects = kustomize(ROOT / "kustomize" / "overlays" / "dev")
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "modelferry-controller"
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == env["MODELFERRY_CONTROLLER__JOB__IMAGE"] == "localhost/modelferry:dev"
    assert env["MODELFERRY_CONTROLLER__JOB__IMAGE_PULL_POLICY"] == "Never"


def test_rhoai_poc_overlay_runs_in_demo_with_poc_names() -> None:
    objects = kustomize(ROOT / "kustomize" / "overlays" / "rhoai-poc")
    namespaced = [
        o
        for o in objects
        if o["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Namespace")
    ]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"demo"}
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "modelferry-controller"
    )
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELFERRY_CONTROLLER__NAMESPACES"] == '["demo"]'
    assert env["MODELFERRY_CONTROLLER__MODEL_SOURCE_SECRET"] == "model-source"
    assert env["MODELFERRY_CONTROLLER__DATA_CONNECTION"] == "demo-models"
    binding = next(
        o for o in objects if o["kind"] == "ClusterRoleBinding" and o["metadata"]["name"] == "modelferry-controller"
    )
    assert binding["subjects"][0]["namespace"] == "demo"


def test_monitoring_component_renders(tmp_path: Path) -> None:
    overlay = tmp_path / "with-monitoring"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {  # kustomize refuses absolute paths
                "resources": [os.path.relpath(ROOT / "kustomize" / "base", overlay)],
                "components": [os.path.relpath(ROOT / "kustomize" / "components" / "monitoring", overlay)],
            }
        )
    )
    objects = kustomize(overlay)
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    service = next(
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "modelferry-controller-metrics"
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    kinds = {o["kind"] for o in objects}
    assert {"PodMonitor", "PrometheusRule"} <= kinds
    dashboard = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "modelferry-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_every_example_validates() -> None:
    schemas = crd_schemas()
    examples = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        for obj in docs(path):
            if obj["kind"] != "Namespace":  # the quickstart creates its namespace; everything else names one
                assert obj["metadata"].get("namespace"), f"{path.name}: {obj['metadata']['name']} needs a namespace"
            if obj["kind"] == "Secret":
                assert "stringData" in obj and "data" not in obj, f"{path.name}: use stringData"
            if is_builtin(obj):
                kubernetes_validate.validate(obj, K8S, strict=True)
            else:
                jsonschema.validate(obj, schemas[(obj["apiVersion"], obj["kind"])])


def test_modelsync_schema_rejects_bad_examples() -> None:
    schema = crd_schemas()[("modelferry.io/v1alpha1", "ModelSync")]
    good = {"apiVersion": "modelferry.io/v1alpha1", "kind": "ModelSync", "metadata": {"name": "x"},
            "spec": {"source": {"uri": "hf://a/b"}, "target": {"dataConnection": "demo-models"}}}  # fmt: skip
    jsonschema.validate(good, schema)
    for bad_spec in (
        {"target": {"uri": "s3://b/p"}},
        {"source": {"uri": ""}, "target": {}},
        {**good["spec"], "transfer": {"concurrency": 0}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, "spec": bad_spec}, schema)


def test_plain_manifests_validate() -> None:
    for path in [
        *(ROOT / "manifests" / "crds").glob("modelsync*.yaml"),
        *(ROOT / "manifests" / "controller").glob("*.yaml"),
    ]:
        for obj in docs(path):
            if obj.get("kind") == "Kustomization":
                continue
            kubernetes_validate.validate(obj, K8S, strict=True)


def test_containerfile_entry_points_exist() -> None:
    text = (ROOT / "Containerfile").read_text()
    entry = re.search(r'ENTRYPOINT \["([^"]+)"\]', text)
    cmd = re.search(r'CMD \["([^"]+)"\]', text)
    assert entry and cmd
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f"{entry.group(1)} = " in pyproject, "the ENTRYPOINT must be a console script"
    assert cmd.group(1) in SUBCOMMANDS
    assert re.search(r'install --no-cache-dir "\.\[\$\{EXTRAS\}\]"', text), "the image installs the EXTRAS argument"
    extras = re.search(r"^ARG EXTRAS=(\S+)$", text, re.M)
    assert extras
    for extra in extras.group(1).split(","):
        assert re.search(rf"^{extra} = \[", pyproject, re.M), f"extra {extra} is not in pyproject.toml"
    for package in re.findall(r"^COPY (\w+) \./\w+$", text, re.M):
        assert (ROOT / package / "__init__.py").exists()
    assert re.search(r"^USER 1001$", text, re.M), "the runtime stage must not run as root"
    # The Jobs and the Deployment call subcommands that must exist.
    for sub in ("controller", "sync", "noop", "upload"):
        assert sub in SUBCOMMANDS
