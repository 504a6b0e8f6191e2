"""Containerfile.train: the image of the built-in peft-lora runtime builds what the controller runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from modelferry import __version__
from modelferry.controller.config.controller import TRAIN_IMAGE, ControllerSettings
from modelferry.controller.training import RenderContext

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "Containerfile.train").read_text()


def test_the_default_trainer_image_is_pinned_to_the_release() -> None:
    assert TRAIN_IMAGE.endswith(f":{__version__}")
    assert ControllerSettings().training.train_image == RenderContext().train_image == TRAIN_IMAGE
    # the build line documented in the Containerfile produces that very name
    assert f"podman build -t {TRAIN_IMAGE} -f Containerfile.train ." in TEXT


def test_base_image_and_pip_are_pinned() -> None:
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", TEXT, re.M)
    assert base and not base.group(1).endswith(":latest") and ":" in base.group(1)
    assert re.search(r'pip install --no-cache-dir "pip==[\d.]+"', TEXT)


def test_it_installs_the_trainer_extras_and_runs_non_root() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    extras = re.search(r'install --no-cache-dir "\.\[([^\]]+)\]"', TEXT)
    assert extras
    assert "train" in extras.group(1).split(",")
    for extra in extras.group(1).split(","):
        assert re.search(rf"^{extra} = \[", pyproject, re.M), f"extra {extra} is not in pyproject.toml"
    for package in re.findall(r"^COPY (\w+) \./\w+$", TEXT, re.M):
        assert (ROOT / package / "__init__.py").exists()
    assert re.search(r"^USER 1001$", TEXT, re.M)
    # group-0 permissions are set in the build stage, so the runtime stage stores the venv once
    build, runtime = TEXT.split("AS runtime")
    assert "chmod -R g=u /opt/modelferry" in build and "chmod -R g=u /opt/modelferry" not in runtime


def test_the_entry_point_it_declares_exists() -> None:
    cmd = re.search(r"^CMD (\[.*\])$", TEXT, re.M)
    assert cmd
    argv = json.loads(cmd.group(1))
    assert argv[:2] == ["python3", "-m"]
    # the same module the sidecar writes into command.sh for runtime peft-lora
    from modelferry.sidecar.trainer_command import runtime_command

    assert argv[2] in runtime_command.__code__.co_consts
    done = subprocess.run(
        [sys.executable, "-m", argv[2], "--help"], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "--model" in done.stdout and "--output" in done.stdout
