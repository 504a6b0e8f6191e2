"""The README's cluster quickstart, run line for line on a kind cluster (the block is read from README.md).

Needs kind, podman, kubectl and a reachable kind cluster (the current kubeconfig context); it skips and
says which is missing otherwise. Run with ``pytest -m e2e tests/e2e/test_quickstart.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def quickstart_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- quickstart:kind -->\s*```bash\n(.*?)```\s*<!-- /quickstart:kind -->", text, re.S)
    assert block is not None, "README.md lost its kind quickstart block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.e2e
def test_readme_quickstart_runs_line_for_line() -> None:
    missing = [tool for tool in ("kind", "podman", "kubectl") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the quickstart needs {', '.join(missing)}")
    probe = subprocess.run(
        ["kubectl", "get", "--raw", "/readyz"], capture_output=True, text=True, timeout=20, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"no Kubernetes cluster reachable with the current kubeconfig: {probe.stderr.strip()[:200]}")
    for line in quickstart_lines():
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", line],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert "Succeeded" in done.stdout  # the last line shows the ModelSync's phase
