"""The import names: `controller/` and `sidecar/` install as modelferry.controller and modelferry.sidecar.

The folders sit at the top of the checkout and reach the `modelferry` package through two committed
symlinks (docs/architecture.md#import-names). These tests build what a user gets, a wheel and an editable
install, from a copy of the checkout, and look at what they hold and import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MOVED = ("controller", "sidecar")
PROBE = """
import importlib, importlib.util, json, sys
found = {name: getattr(importlib.util.find_spec(name), "origin", None) for name in sys.argv[1:]}
importlib.import_module("modelferry.controller.kube")
importlib.import_module("modelferry.sidecar.trainers")
print(json.dumps(found))
"""
EXPECTED = {  # module -> its file, relative to where the modelferry package is
    "modelferry.controller.operator": "modelferry/controller/operator/__init__.py",
    "modelferry.sidecar.trainers.peft_lora": "modelferry/sidecar/trainers/peft_lora.py",
}


def copy_checkout(to: Path) -> Path:
    """What a build reads (the Containerfiles copy the same), links kept as links."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    to.mkdir()
    for name in ["pyproject.toml", project["readme"], *project["license-files"]]:
        shutil.copy(ROOT / name, to / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("modelferry", *MOVED):
        shutil.copytree(ROOT / name, to / name, symlinks=True, ignore=ignore)
    for name in MOVED:
        assert (to / "modelferry" / name).is_symlink(), f"modelferry/{name} should be a symlink to ../{name}"
    return to


def pip(python: Path | str, *args: str, cwd: Path) -> None:
    done = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input", *args, "--no-deps", "--no-index"],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return env | extra


def probe(python: Path | str, *flags: str, cwd: Path, env: dict[str, str]) -> dict[str, str | None]:
    names = [*EXPECTED, *MOVED]
    done = subprocess.run(
        [str(python), *flags, "-c", PROBE, *names],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, str | None] = json.loads(done.stdout)
    return found


@pytest.mark.slow
def test_the_wheel_holds_controller_and_sidecar_under_modelferry_only(tmp_path: Path) -> None:
    src = copy_checkout(tmp_path / "src")
    pip(sys.executable, "wheel", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src), cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("modelferry-*.whl")
    names = zipfile.ZipFile(wheel).namelist()

    tops = {name.split("/")[0] for name in names}
    assert tops == {"modelferry", wheel.name.split("-py")[0] + ".dist-info"}, sorted(tops)
    for package in MOVED:  # every module of the folder, under its new name, and no link left in the wheel
        modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py"))
        assert modules, package
        missing = [m for m in modules if f"modelferry/{m}" not in names]
        assert not missing, f"the wheel lacks {missing}"

    site, run = tmp_path / "site", tmp_path / "run"
    run.mkdir()
    pip(sys.executable, "install", "--target", str(site), str(wheel), cwd=tmp_path)
    # -S: no site-packages of this environment (where the checkout may be installed editable)
    found = probe(sys.executable, "-S", cwd=run, env=clean_env(PYTHONPATH=str(site)))
    assert {name: found[name] for name in EXPECTED} == {name: str(site / file) for name, file in EXPECTED.items()}
    assert found["controller"] is None and found["sidecar"] is None  # `import controller` no longer works


@pytest.mark.slow
def test_an_editable_install_imports_the_new_names_from_the_checkout(tmp_path: Path) -> None:
    src = copy_checkout(tmp_path / "src")
    env_dir, run = tmp_path / "env", tmp_path / "run"
    run.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # pip and setuptools come from this environment: a plain path entry (its .pth files are not run)
    Path(purelib, "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip(python, "install", "--no-build-isolation", "-e", str(src), cwd=tmp_path)

    found = probe(python, cwd=run, env=clean_env())
    assert {name: found[name] for name in EXPECTED} == {name: str(src / file) for name, file in EXPECTED.items()}
    assert found["controller"] is None and found["sidecar"] is None


@pytest.mark.parametrize("package", MOVED)
def test_importing_a_folder_under_its_old_name_fails_and_names_the_right_import(package: str) -> None:
    """From the checkout root the folders are importable by their bare names: that would load each module twice."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {package}"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        env=clean_env(PYTHONPATH=str(ROOT)),
        timeout=120,
    )
    assert done.returncode == 1
    assert f"ImportError: {package} is part of modelferry: import modelferry.{package}" in done.stderr
