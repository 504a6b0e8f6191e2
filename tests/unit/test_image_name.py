"""One image name and tag everywhere: the manifests, every overlay, the controller's defaults and the build line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelferry import __version__
from modelferry.controller.config.controller import IMAGE, ControllerSettings
from modelferry.controller.training import RenderContext
from tests.unit.test_manifests import OVERLAYS, kustomize

ROOT = Path(__file__).resolve().parents[2]


def our_images(objs: list[dict[str, Any]]) -> set[str]:
    """Images of our containers, plus the image the controller gives its Jobs."""
    found = set()
    for obj in objs:
        if obj.get("kind") not in ("Deployment", "DaemonSet"):
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            if "modelferry" in container["image"]:  # our image, whatever registry an overlay moves it to
                found.add(container["image"])
            for env in container.get("env") or []:
                if env["name"] == "MODELFERRY_CONTROLLER__JOB__IMAGE":
                    found.add(env["value"])
    return found


def test_the_image_is_tagged_with_the_package_version() -> None:
    assert f"quay.io/modelferry/modelferry:{__version__}" == IMAGE
    assert ControllerSettings().job.image == RenderContext().sidecar_image == IMAGE
    assert f"podman build -t {IMAGE} -f Containerfile ." in (ROOT / "Containerfile").read_text()


def test_plain_manifests_name_that_image_only() -> None:
    objs = [d for p in sorted((ROOT / "manifests").glob("*/*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    assert our_images(objs) == {IMAGE}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_uses_one_image_for_everything(overlay: str) -> None:
    images = our_images(kustomize(ROOT / "kustomize" / overlay))
    assert len(images) == 1, images  # controller, agent and the Jobs' image move together
    if overlay == "overlays/dev":
        assert images == {"localhost/modelferry:dev"}


def test_no_moving_tags_for_our_images() -> None:
    texts = [p.read_text() for p in [*ROOT.glob("Containerfile*"), *(ROOT / "manifests").rglob("*.yaml")]]
    texts += [p.read_text() for p in (ROOT / "kustomize").rglob("*.yaml")]
    for text in texts:
        assert not re.search(r"modelferry(-train)?:latest", text)
