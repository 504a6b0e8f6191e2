"""The OLM bundle: generated from manifests/ (the committed copy is current), valid for OLM, and breakable."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.bundle import BUNDLE, ROOT, generate, stale
from tools.bundle.__main__ import main
from tools.bundle.layout import ANNOTATIONS, CONTAINERFILE, CSV_FILE, dump
from tools.bundle.validate import csv_schema, olm_schema_path, validate

SCHEMA_PATH = olm_schema_path(ROOT)
needs_olm_schema = pytest.mark.skipif(
    not SCHEMA_PATH.is_file(), reason=f"OLM's ClusterServiceVersion CRD is not kept at {SCHEMA_PATH}"
)


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return generate(ROOT)


def read_csv(bundle: Path = BUNDLE) -> dict[str, Any]:
    csv: dict[str, Any] = yaml.safe_load((bundle / CSV_FILE).read_text())
    return csv


def test_committed_bundle_is_what_the_manifests_generate(files: dict[str, str]) -> None:
    behind = stale(files, ROOT)
    assert not behind, f"{behind} differ from manifests/; run: python -m tools.bundle"
    assert main(["--check"]) == 0


def test_check_names_a_drifted_file_and_a_stray_one(tmp_path: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    assert stale(files, tmp_path) == []
    csv = tmp_path / "bundle" / CSV_FILE
    csv.write_text(csv.read_text().replace("maturity: alpha", "maturity: stable"))
    (tmp_path / "bundle" / "manifests" / "old.crd.yaml").write_text("{}\n")
    assert stale(files, tmp_path) == sorted(["bundle/manifests/old.crd.yaml", f"bundle/{CSV_FILE}"])


@needs_olm_schema
def test_csv_validates_against_olms_own_schema() -> None:
    assert validate(BUNDLE, ROOT, csv_schema(SCHEMA_PATH)) == []
    assert main(["--validate"]) == 0


def test_semantic_checks_pass() -> None:
    assert validate(BUNDLE, ROOT) == []


def test_csv_owns_every_crd_with_descriptors_and_examples() -> None:
    csv = read_csv()
    owned = {o["kind"]: o for o in csv["spec"]["customresourcedefinitions"]["owned"]}
    assert set(owned) == {"ModelSync", "TrainingRun", "BaseModel", "ClusterBaseModel", "ModelServer", "NodeAgent"}
    agent = owned["NodeAgent"]
    assert {"image", "nodeSelector", "tolerations", "modelsRoot", "resources"} <= {
        d["path"] for d in agent["specDescriptors"]
    }
    ready = next(d for d in agent["statusDescriptors"] if d["path"] == "conditions")
    assert ready["x-descriptors"] == ["urn:alm:descriptor:io.kubernetes.conditions"]
    examples = json.loads(csv["metadata"]["annotations"]["alm-examples"])
    assert {e["kind"] for e in examples} == set(owned)
    assert all("namespace" not in e["metadata"] for e in examples)
    assert csv["spec"]["maturity"] == "alpha" and csv["spec"]["icon"][0]["mediatype"] == "image/svg+xml"
    initial = json.loads(csv["metadata"]["annotations"]["operatorframework.io/initialization-resource"])
    assert initial["kind"] == "NodeAgent" and initial["metadata"]["name"] == "default"


def test_agent_service_account_gets_its_rights_from_the_csv() -> None:
    install = read_csv()["spec"]["install"]["spec"]
    cluster = {p["serviceAccountName"]: p["rules"] for p in install["clusterPermissions"]}
    namespaced = {p["serviceAccountName"]: p["rules"] for p in install["permissions"]}
    assert set(cluster) == set(namespaced) == {"modelferry-controller", "modelferry-agent"}
    assert any("securitycontextconstraints" in r["resources"] for r in cluster["modelferry-agent"])
    assert any("configmaps" in r["resources"] for r in namespaced["modelferry-agent"])
    assert any("daemonsets" in r["resources"] for r in namespaced["modelferry-controller"])
    (deployment,) = install["deployments"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    from modelferry import __version__

    assert image == f"quay.io/modelferry/modelferry:{__version__}"


def test_containerfile_is_a_plain_bundle_image(files: dict[str, str]) -> None:
    text = files[CONTAINERFILE]
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "FROM scratch"
    assert not [line for line in lines if line.split()[0] not in ("FROM", "LABEL", "COPY")]  # no RUN: nothing to run
    labels = dict(line.removeprefix("LABEL ").split("=", 1) for line in lines if line.startswith("LABEL "))
    assert labels == ANNOTATIONS == yaml.safe_load(files["bundle/metadata/annotations.yaml"])["annotations"]
    assert "COPY bundle/manifests /manifests/" in lines and "COPY bundle/metadata /metadata/" in lines


# --- a copy of the bundle, broken on purpose: validation must say what is wrong -------------------------


def owned_of(csv: dict[str, Any], kind: str) -> dict[str, Any]:
    owned: dict[str, Any] = next(o for o in csv["spec"]["customresourcedefinitions"]["owned"] if o["kind"] == kind)
    return owned


def break_version(csv: dict[str, Any]) -> None:
    owned_of(csv, "NodeAgent")["version"] = "v1"


def break_kind(csv: dict[str, Any]) -> None:
    owned_of(csv, "ModelSync")["kind"] = "ModelCopy"


def break_descriptor(csv: dict[str, Any]) -> None:
    owned_of(csv, "NodeAgent")["specDescriptors"].append({"path": "nodeSelektor", "displayName": "Typo"})


def break_examples_json(csv: dict[str, Any]) -> None:
    csv["metadata"]["annotations"]["alm-examples"] = "[{not json"


def break_example(csv: dict[str, Any]) -> None:
    examples = json.loads(csv["metadata"]["annotations"]["alm-examples"])
    next(e for e in examples if e["kind"] == "NodeAgent")["spec"]["workers"] = 0
    csv["metadata"]["annotations"]["alm-examples"] = json.dumps(examples)


def break_deployment(csv: dict[str, Any]) -> None:
    csv["spec"]["install"]["spec"]["deployments"][0]["spec"]["template"]["spec"]["containers"][0]["image"] = "x:1"


def break_permissions(csv: dict[str, Any]) -> None:
    for entry in csv["spec"]["install"]["spec"]["clusterPermissions"]:
        if entry["serviceAccountName"] == "modelferry-agent":
            entry["rules"] = [r for r in entry["rules"] if "nodes" not in r["resources"]]


def break_install_modes(csv: dict[str, Any]) -> None:
    csv["spec"]["installModes"] = csv["spec"]["installModes"][:2]


def break_version_field(csv: dict[str, Any]) -> None:
    csv["spec"]["version"] = "9.9.9"


BREAKS: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (break_version, "version 'v1' is not a served version"),
    (break_kind, "kind 'ModelCopy' but the CRD says 'ModelSync'"),
    (break_descriptor, "specDescriptor 'nodeSelektor' is not a field of spec"),
    (break_examples_json, "alm-examples is not JSON"),
    (break_example, "alm-examples["),
    (break_deployment, "differs from manifests/controller/deployment.yaml"),
    (break_permissions, "clusterPermissions of modelferry-agent lacks get on nodes (core)"),
    (break_install_modes, "installModes should name each of"),
    (break_version_field, "spec.version '9.9.9' is not the package version"),
]


def broken_copy(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle)
    return bundle


@pytest.mark.parametrize(("breaker", "expected"), BREAKS, ids=[b.__name__ for b, _ in BREAKS])
def test_a_broken_csv_fails_validation(
    tmp_path: Path, breaker: Callable[[dict[str, Any]], None], expected: str
) -> None:
    bundle = broken_copy(tmp_path)
    csv = read_csv(bundle)
    breaker(csv)
    (bundle / CSV_FILE).write_text(dump(csv))
    problems = validate(bundle, ROOT)
    assert any(expected in p for p in problems), problems


def test_a_missing_crd_and_wrong_metadata_fail_validation(tmp_path: Path) -> None:
    bundle = broken_copy(tmp_path)
    (bundle / "manifests" / "modelferry.io_nodeagents.yaml").unlink()
    annotations = bundle / "metadata" / "annotations.yaml"
    annotations.write_text(annotations.read_text().replace("package.v1: modelferry", "package.v1: other"))
    problems = validate(bundle, ROOT)
    assert "owned CRD nodeagents.modelferry.io is not in the bundle's manifests/" in problems
    assert any("operators.operatorframework.io.bundle.package.v1 is 'other'" in p for p in problems)


@needs_olm_schema
@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("spec", "maturity"), 5, "spec.maturity"),
        (("spec", "installModes", 0, "supported"), "yes", "spec.installModes.0.supported"),
        (("spec", "install", "strategy"), None, "spec.install"),
    ],
)
def test_olms_schema_catches_what_it_describes(tmp_path: Path, path: tuple[Any, ...], value: Any, where: str) -> None:
    bundle = broken_copy(tmp_path)
    csv = read_csv(bundle)
    node: Any = csv
    for part in path[:-1]:
        node = node[part]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    (bundle / CSV_FILE).write_text(dump(csv))
    problems = validate(bundle, ROOT, csv_schema(SCHEMA_PATH))
    assert any(p.startswith(f"CSV: {where}") for p in problems), problems
