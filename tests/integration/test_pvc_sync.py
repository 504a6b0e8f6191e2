"""A ModelSync between claims, run as its Job would run it: the rendered mounts stand in as local directories.

The controller mounts each claim at ``<pvc root>/<claim>``; the sync worker opens ``pvc://claim/sub``
there. This runs the rendered container's own argv and env (``modelferry sync ...``) as a child process
with every mount path mapped under a temporary directory, so the path the renderer chose is the path
the worker reads and writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from modelferry.controller.config.controller import ControllerSettings
from modelferry.controller.sync.modelsync import plan_modelsync_job

SPEC = {"source": {"uri": "pvc://cache/llama"}, "target": {"uri": "pvc://serving/models/llama"}}


def test_sync_between_claims_through_the_rendered_mounts(tmp_path: Path) -> None:
    ms = {"metadata": {"name": "llama", "namespace": "team-a", "uid": "u"}, "spec": SPEC}
    plan = plan_modelsync_job(ms, {}, ControllerSettings())
    assert plan.job is not None
    [container] = plan.job["spec"]["template"]["spec"]["containers"]
    fake_root = tmp_path / "pod"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"] if m["mountPath"].startswith("/mnt/")}
    assert set(mounts) == {"/mnt/pvc/cache", "/mnt/pvc/serving"}
    for path in mounts:  # "mount" each claim: an empty directory at the same place under fake_root
        (fake_root / path.lstrip("/")).mkdir(parents=True)
    source = fake_root / "mnt/pvc/cache/llama"
    source.mkdir()
    (source / "config.json").write_text('{"model_type": "llama"}')
    (source / "model.safetensors").write_bytes(os.urandom(2 * 1024 * 1024 + 5))
    env = {**os.environ, "MODELFERRY_PVC_ROOT": str(fake_root / "mnt/pvc"), "MODELFERRY_TERMINATION_LOG": ""}
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e and e["name"] != "HOME"})
    done = subprocess.run(
        [sys.executable, "-m", "modelferry", *container["args"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["target"] == "pvc://serving/models/llama", summary
    target = fake_root / "mnt/pvc/serving/models/llama"
    assert (target / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert (target / ".modelferry").is_dir()  # the manifest, written last
