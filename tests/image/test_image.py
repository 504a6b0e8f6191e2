"""The image, run as a restricted pod runs it: read-only root, tmpfs /tmp, an arbitrary UID in group 0."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from modelferry import __version__
from tests.image.builder import Image
from tests.servers.kube import KubeEmulator

pytestmark = pytest.mark.image
ROOT = Path(__file__).resolve().parents[2]


def test_version_matches_the_package(image: Image) -> None:
    done = image.run(["--version"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(__version__)


def test_runs_as_an_arbitrary_uid_on_a_read_only_root(image: Image) -> None:
    done = image.run(shell="id -u; id -g; touch /opt/modelferry/x 2>/dev/null && echo writable || echo read-only")
    assert done.returncode == 0, done.stderr
    uid, gid, root = done.stdout.split()
    assert (uid, gid, root) == ("100042", "0", "read-only")


def test_a_local_sync_writes_its_manifest(image: Image) -> None:
    script = (
        "mkdir -p /tmp/src/sub && head -c 3000000 /dev/urandom > /tmp/src/model.safetensors"
        " && echo '{}' > /tmp/src/sub/config.json"
        " && modelferry sync /tmp/src /tmp/dst --json > /tmp/summary.json"
        " && cat /tmp/summary.json && echo ---"
        " && cat /tmp/dst/.modelferry/manifest.json && echo ---"
        " && sha256sum /tmp/src/model.safetensors"
    )
    done = image.run(shell=script, env={"MODELFERRY_TERMINATION_LOG": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    summary_text, manifest_text, digest = done.stdout.split("---\n")
    summary, manifest = json.loads(summary_text), json.loads(manifest_text)
    assert summary["status"] == "complete"
    files = {f["path"]: f for f in manifest["files"]}
    assert set(files) == {"model.safetensors", "sub/config.json"}
    assert files["model.safetensors"]["sha256"] == digest.split()[0]


def entry_points() -> set[tuple[str, ...]]:
    """Every modelferry subcommand a manifest or a controller-rendered pod runs."""
    found: set[tuple[str, ...]] = set()
    for path in [*(ROOT / "manifests").rglob("*.yaml")]:
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") not in ("Deployment", "DaemonSet", "Job"):
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                argv = [*(container.get("command") or []), *(container.get("args") or [])]
                if argv and argv[0] == "modelferry":
                    found.add(tuple(a for a in argv[1:2]))
    # what the controller renders: sync Jobs (ModelSync, Secret mode), the "complete" no-op, the sidecar
    found |= {("sync",), ("noop",), ("sidecar", "run"), ("agent",), ("controller",)}
    return found


def test_every_entry_point_the_manifests_use_starts(image: Image) -> None:
    commands = sorted(entry_points())
    assert ("controller",) in commands and ("agent",) in commands
    script = " && ".join(f"modelferry {' '.join(c)} --help > /dev/null && echo ok {'-'.join(c)}" for c in commands)
    done = image.run(shell=script)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(re.findall(r"^ok (\S+)$", done.stdout, re.M)) == sorted("-".join(c) for c in commands)


IMPORT_ALL = """
import importlib, json, pkgutil, sys
optional = set(sys.argv[2].split(","))
broken = {}
for top in sys.argv[1].split(","):
    try:
        package = importlib.import_module(top)
    except Exception as exc:
        broken[top] = repr(exc)
        continue
    for module in pkgutil.walk_packages(package.__path__, top + "."):
        if module.name.endswith(".__main__"):
            continue  # running it is the CLI itself
        try:
            importlib.import_module(module.name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in optional:
                broken[module.name] = repr(exc)
        except Exception as exc:
            broken[module.name] = repr(exc)
print(json.dumps(broken))
"""


def test_every_module_of_the_package_imports_in_the_image(image: Image) -> None:
    """A package the Containerfile forgot to copy, or a dependency its extras lack, fails here.

    The image leaves out the heavy training and serving extras on purpose: modules that need them may
    fail to import, but only for want of exactly those distributions.
    """
    pyproject = (ROOT / "pyproject.toml").read_text()
    tops = re.search(r"^include = \[([^\]]*)\]", pyproject, re.M)
    assert tops
    packages = [name.strip().strip('"').rstrip("*") for name in tops.group(1).split(",")]
    optional = "torch,transformers,peft,datasets,accelerate,safetensors,pynvml"
    done = image.run(["python3", "-c", IMPORT_ALL, ",".join(packages), optional], entrypoint=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_controller_serves_healthz_against_an_api_server(image: Image) -> None:
    emulator = KubeEmulator()
    await emulator.start()
    port = free_port()
    env = {
        "MODELFERRY_CONTROLLER__API_URL": emulator.url,
        "MODELFERRY_CONTROLLER__METRICS_HOST": "127.0.0.1",
        "MODELFERRY_CONTROLLER__METRICS_PORT": str(port),
        "MODELFERRY_CONTROLLER__LEADER_ELECTION": "false",
        "MODELFERRY_CONTROLLER__TRAINING__ENABLED": "false",
        "MODELFERRY_CONTROLLER__AGGREGATE_MODELS": "false",
    }
    proc = await asyncio.create_subprocess_exec(
        *image.command(None, env=env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        answer: dict[str, Any] = {}
        async with aiohttp.ClientSession() as session:
            for _ in range(600):  # the image's Python starts in a second or two; give it a minute
                if proc.returncode is not None:
                    break
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        answer = {"status": response.status, "text": await response.text()}
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        assert answer.get("status") == 200, (answer, proc.returncode)
        # healthz may answer before the first list goes out: wait for it (a minute at most).
        for _ in range(600):
            if any(path.startswith(("/api", "/apis")) for _, path in emulator.requests) or proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        assert any(path.startswith(("/api", "/apis")) for _, path in emulator.requests), proc.returncode
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
        await emulator.stop()
