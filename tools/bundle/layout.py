"""Names, paths and YAML helpers of the bundle (shared by the generator and the validator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelferry import __version__

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundle"
CONTAINERFILE = "bundle.Containerfile"
PACKAGE = "modelferry"
CHANNEL = "alpha"
IMAGE = f"quay.io/modelferry/modelferry:{__version__}"
IMAGE_REPOSITORY = "quay.io/modelferry/modelferry"
CSV_FILE = f"manifests/{PACKAGE}.clusterserviceversion.yaml"
ANNOTATIONS = {
    "operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
    "operators.operatorframework.io.bundle.manifests.v1": "manifests/",
    "operators.operatorframework.io.bundle.metadata.v1": "metadata/",
    "operators.operatorframework.io.bundle.package.v1": PACKAGE,
    "operators.operatorframework.io.bundle.channels.v1": CHANNEL,
    "operators.operatorframework.io.bundle.channel.default.v1": CHANNEL,
}


LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where built: OLM's CSV CRD is 800 kB


def load_all(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of a file (empty ones dropped)."""
    return [d for d in yaml.load_all(path.read_text(), Loader=LOADER) if d]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the CSV's description, alm-examples) as readable literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(obj: Any) -> str:
    """YAML the way every generated file is written (stable across runs)."""
    text: str = yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)
    return text


def crd_file_name(crd: dict[str, Any]) -> str:
    """operator-sdk's name for a CRD in a bundle: ``<group>_<plural>.yaml``."""
    return f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.yaml"
