"""Checks of an OLM bundle: the CSV against OLM's own CRD schema, and what that schema cannot see.

OLM's ClusterServiceVersion CRD is kept as data beside the checkout (``../shared/olm/``); where it is
absent :func:`schema_errors` cannot run and callers say so. The semantic checks always run: every owned
CRD is in the bundle with the same name, version and kind, descriptors point at fields that exist, the
``alm-examples`` parse and validate against their CRDs, the install Deployment is the one of
``manifests/controller/deployment.yaml`` and the permissions cover the RBAC manifests.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from modelferry import __version__
from tools.bundle.csv import controller_deployment
from tools.bundle.layout import ANNOTATIONS, PACKAGE, ROOT, load_all

OLM_CRD = Path("olm") / "operators.coreos.com_clusterserviceversions.yaml"
INSTALL_MODES = {"OwnNamespace", "SingleNamespace", "MultiNamespace", "AllNamespaces"}


def olm_schema_path(root: Path = ROOT) -> Path:
    """Where OLM's ClusterServiceVersion CRD is kept: ``../shared/olm/`` beside the checkout."""
    return root.parent / "shared" / OLM_CRD


@functools.cache
def csv_schema(path: Path) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of OLM's ClusterServiceVersion CRD (version v1alpha1)."""
    (crd,) = [d for d in load_all(path) if d.get("kind") == "CustomResourceDefinition"]
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(the document)"


def schema_errors(doc: dict[str, Any], schema: dict[str, Any], what: str = "CSV") -> list[str]:
    """Every place ``doc`` breaks ``schema`` (a Kubernetes structural schema), as readable lines."""
    validator = jsonschema.Draft4Validator(schema)
    return [f"{what}: {_where(e)}: {e.message[:300]}" for e in validator.iter_errors(doc)]


def find_csv(bundle: Path) -> Path:
    found = sorted((bundle / "manifests").glob("*.clusterserviceversion.yaml"))
    if len(found) != 1:
        raise FileNotFoundError(f"{bundle}/manifests holds {len(found)} ClusterServiceVersions; a bundle has one")
    return found[0]


def bundle_crds(bundle: Path) -> dict[str, dict[str, Any]]:
    """CRD name -> CRD, for every CRD in ``bundle/manifests``."""
    crds = {}
    for path in sorted((bundle / "manifests").glob("*.yaml")):
        for doc in load_all(path):
            if doc.get("kind") == "CustomResourceDefinition":
                crds[doc["metadata"]["name"]] = doc
    return crds


def _version_schema(crd: dict[str, Any], version: str) -> dict[str, Any] | None:
    for v in crd["spec"]["versions"]:
        if v["name"] == version and v.get("served", True):
            schema: dict[str, Any] = v["schema"]["openAPIV3Schema"]
            return schema
    return None


def _has_path(schema: dict[str, Any], path: str) -> bool:
    node: dict[str, Any] | None = schema
    for part in path.split("."):
        node = ((node or {}).get("properties") or {}).get(part)
        if node is None:
            return False
    return True


def owned_errors(csv: dict[str, Any], crds: dict[str, dict[str, Any]]) -> list[str]:
    """Owned CRDs against the bundle's CRDs: name, version, kind, and descriptor paths."""
    errors = []
    owned = ((csv.get("spec") or {}).get("customresourcedefinitions") or {}).get("owned") or []
    for entry in owned:
        name, version, kind = entry.get("name"), entry.get("version"), entry.get("kind")
        crd = crds.get(str(name))
        if crd is None:
            errors.append(f"owned CRD {name} is not in the bundle's manifests/")
            continue
        if crd["spec"]["names"]["kind"] != kind:
            errors.append(f"owned CRD {name}: kind {kind!r} but the CRD says {crd['spec']['names']['kind']!r}")
        schema = _version_schema(crd, str(version))
        if schema is None:
            errors.append(f"owned CRD {name}: version {version!r} is not a served version of the CRD")
            continue
        for part in ("spec", "status"):
            for desc in entry.get(f"{part}Descriptors") or []:
                if not _has_path((schema.get("properties") or {}).get(part) or {}, str(desc.get("path"))):
                    errors.append(f"owned CRD {name}: {part}Descriptor {desc.get('path')!r} is not a field of {part}")
    missing = sorted(set(crds) - {str(e.get("name")) for e in owned})
    errors += [f"CRD {name} is in the bundle but not owned by the CSV" for name in missing]
    return errors


def example_errors(csv: dict[str, Any], crds: dict[str, dict[str, Any]]) -> list[str]:
    """``alm-examples``: valid JSON, one example per owned kind, each valid against its CRD."""
    text = ((csv.get("metadata") or {}).get("annotations") or {}).get("alm-examples")
    try:
        examples = json.loads(text or "")
    except ValueError as exc:
        return [f"metadata.annotations.alm-examples is not JSON: {exc}"]
    if not isinstance(examples, list):
        return ["metadata.annotations.alm-examples must be a JSON list of objects"]
    by_kind = {(c["spec"]["group"], c["spec"]["names"]["kind"]): c for c in crds.values()}
    errors, seen = [], set()
    for i, example in enumerate(examples):
        group, _, version = str(example.get("apiVersion", "")).rpartition("/")
        crd = by_kind.get((group, str(example.get("kind"))))
        schema = _version_schema(crd, version) if crd else None
        if schema is None:
            errors.append(f"alm-examples[{i}] ({example.get('kind')}): no CRD in the bundle serves {group}/{version}")
            continue
        seen.add(example.get("kind"))
        errors += schema_errors(example, schema, f"alm-examples[{i}] ({example.get('kind')})")
    owned = ((csv.get("spec") or {}).get("customresourcedefinitions") or {}).get("owned") or []
    errors += [f"alm-examples has no example of {k}" for k in sorted({e.get("kind") for e in owned} - seen)]
    return errors


def deployment_errors(csv: dict[str, Any], root: Path) -> list[str]:
    """The install strategy runs exactly manifests/controller/deployment.yaml (images pinned to the release)."""
    expected = controller_deployment(root)
    install = ((csv.get("spec") or {}).get("install") or {}).get("spec") or {}
    deployments = install.get("deployments") or []
    names = [d.get("name") for d in deployments]
    if names != [expected["metadata"]["name"]]:
        return [f"install.spec.deployments are {names}, expected [{expected['metadata']['name']!r}]"]
    if deployments[0].get("spec") != expected["spec"]:
        return ["install.spec.deployments[0].spec differs from manifests/controller/deployment.yaml; regenerate"]
    return []


def _grants(rules: list[dict[str, Any]]) -> Iterator[tuple[str, str, str, str]]:
    for rule in rules:
        for group in rule.get("apiGroups") or [""]:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    for name in rule.get("resourceNames") or ["*"]:
                        yield group, resource, verb, name


def _covered(want: tuple[str, str, str, str], rules: list[dict[str, Any]]) -> bool:
    return any(all(have in (need, "*") for have, need in zip(grant, want, strict=True)) for grant in _grants(rules))


def permission_errors(csv: dict[str, Any], root: Path) -> list[str]:
    """Every rule the RBAC manifests bind to a ServiceAccount is granted to it by the CSV, at the same scope."""
    install = ((csv.get("spec") or {}).get("install") or {}).get("spec") or {}
    errors = []
    for component in ("controller", "agent"):
        docs = load_all(root / "manifests" / component / "rbac.yaml")
        for role_kind, binding_kind, field in (
            ("ClusterRole", "ClusterRoleBinding", "clusterPermissions"),
            ("Role", "RoleBinding", "permissions"),
        ):
            roles = {d["metadata"]["name"]: d for d in docs if d.get("kind") == role_kind}
            granted: dict[str, list[dict[str, Any]]] = {}
            for entry in install.get(field) or []:
                granted.setdefault(str(entry.get("serviceAccountName")), []).extend(entry.get("rules") or [])
            for binding in (d for d in docs if d.get("kind") == binding_kind):
                role = roles.get(binding["roleRef"]["name"])
                for subject in binding.get("subjects") or []:
                    sa = subject.get("name")
                    for want in _grants((role or {}).get("rules") or []):
                        if not _covered(want, granted.get(str(sa), [])):
                            group, resource, verb, _ = want
                            errors.append(
                                f"{field} of {sa} lacks {verb} on {resource} ({group or 'core'}) that "
                                f"manifests/{component}/rbac.yaml grants"
                            )
    return errors


def metadata_errors(csv: dict[str, Any], bundle: Path) -> list[str]:
    """Name, version, install modes, icon, and the bundle's metadata/annotations.yaml."""
    errors = []
    spec, meta = csv.get("spec") or {}, csv.get("metadata") or {}
    if spec.get("version") != __version__:
        errors.append(f"spec.version {spec.get('version')!r} is not the package version {__version__!r}")
    if meta.get("name") != f"{PACKAGE}.v{spec.get('version')}":
        errors.append(f"metadata.name {meta.get('name')!r} should be {PACKAGE}.v{spec.get('version')}")
    modes = {m.get("type") for m in spec.get("installModes") or []}
    if modes != INSTALL_MODES:
        errors.append(f"installModes should name each of {sorted(INSTALL_MODES)} once, not {sorted(map(str, modes))}")
    for i, icon in enumerate(spec.get("icon") or [{}]):
        try:
            base64.b64decode(str(icon.get("base64data")), validate=True)
        except ValueError:
            errors.append(f"icon[{i}].base64data is not base64")
    path = bundle / "metadata" / "annotations.yaml"
    annotations = (yaml.safe_load(path.read_text()) or {}).get("annotations") or {} if path.is_file() else {}
    for key, value in ANNOTATIONS.items():
        if annotations.get(key) != value:
            errors.append(f"metadata/annotations.yaml: {key} is {annotations.get(key)!r}, expected {value!r}")
    return errors


def validate(bundle: Path, root: Path = ROOT, schema: dict[str, Any] | None = None) -> list[str]:
    """Every problem of the bundle in ``bundle`` (empty when it is fine); the schema check only with ``schema``."""
    csv = load_all(find_csv(bundle))[0]
    crds = bundle_crds(bundle)
    errors = schema_errors(csv, schema) if schema is not None else []
    errors += owned_errors(csv, crds)
    errors += example_errors(csv, crds)
    errors += deployment_errors(csv, root)
    errors += permission_errors(csv, root)
    errors += metadata_errors(csv, bundle)
    return errors
