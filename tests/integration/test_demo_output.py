"""What a first-time user reads from ``modelferry demo``: checked by running the command as they would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_output_is_one_readable_account_that_tells_the_truth(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    done = subprocess.run(
        [sys.executable, "-m", "modelferry", "demo", "--epochs", "1", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "MODELFERRY_TERMINATION_LOG": ""},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    err, out = done.stderr, done.stdout

    # one consistent display: numbered steps, no trainer JSON, MLflow notices, timestamps or warnings
    assert not re.search(r"^\s*\{", err, re.M), err
    assert not re.search(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d", err), err
    for noise in ("View run", "Loading weights", "Warning", "[trainer]"):
        assert noise not in err, noise
    # the synced line says how much, and how long
    assert re.search(r"synced the model to s3://\S+: \d+ files, [\d.]+ [kMG]?B in [\d.]+ s", err), err
    # every training step once, each with its loss
    steps = re.findall(r"^\s+step (\d+)/(\d+)\s.*\bloss ([\d.]+)", err, re.M)
    assert [int(s) for s, _, _ in steps] == [1, 2, 3, 4], err
    assert {total for _, total, _ in steps} == {"4"}

    # the adapter line counts what the adapter really holds; the manifest is one level up
    uploaded = [p for p in (workdir / "workspace" / "output" / "adapter").rglob("*") if p.is_file()]
    adapter = re.search(r"adapter:\s+(s3://\S+)/adapter/\s+\((\d+) files\)", out)
    assert adapter is not None, out
    assert int(adapter.group(2)) == len(uploaded)
    assert f"manifest:     {adapter.group(1)}/.modelferry/manifest.json" in out
    # links to stopped servers are not offered as live; the way to keep them is named
    assert "http://127.0.0.1" not in out
    assert "modelferry demo --keep" in out
    assert "The work directory was temporary" not in out  # --workdir given: it is kept
    assert (workdir / "demo.log").stat().st_size > 0  # the chatter went there
