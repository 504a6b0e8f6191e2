"""Packaging facts a build relies on: the license file, the packages the wheel ships, the image's inputs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_an_spdx_expression_with_its_text_shipped() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    for name in project["license-files"]:
        text = (ROOT / name).read_text()
        assert "Apache License" in text and "Version 2.0, January 2004" in text
        assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a notice


def test_the_image_build_copies_every_file_pyproject_names() -> None:
    """pip install in the Containerfile fails if a readme or license file it names was not copied."""
    copied: set[str] = set()
    for line in re.findall(r"^COPY (?!--from)(.+) \./\S*$", (ROOT / "Containerfile").read_text(), re.M):
        copied |= {name.rstrip("*") for name in line.split()}
    project = PYPROJECT["project"]
    for name in [project["readme"], *project["license-files"], "pyproject.toml"]:
        assert name in copied, f"the Containerfile does not copy {name}"


def test_the_wheel_ships_the_runtime_packages_and_not_the_developer_tools() -> None:
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    tops = {name.split(".")[0] for name in find_packages(str(ROOT), include=include)}
    assert tops == {"modelferry"}  # controller/ and sidecar/ ship as modelferry.controller, modelferry.sidecar
