"""Peak memory of ``modelferry sync`` does not grow with the number of files in the tree.

A real child process syncs a generated Hub tree (``tests/servers/synthetic_tree.py``, nothing stored
per file) into a generated S3 target that already holds every file (``--trust-size``): both
listings, the plan and a one-line-per-file manifest go through the whole pipeline. Peak RSS is the
child's own high-water mark (``VmHWM``), read from ``/proc`` just before it exits. Before the
listing, plan and manifest streamed through an on-disk index, each file cost about 2.4 KiB
(35,000 more files: about 80 MiB more); the bound below is under a third of that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers.synthetic_tree import SyntheticTree

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def peak_rss_mib(files: int, tmp_path: Path) -> float:
    """Sync a ``files``-file tree in a child process; its peak RSS in MiB (checked to have completed)."""
    with SyntheticTree(files) as tree:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test-secret",
        }
        argv = [
            sys.executable,
            "-c",
            # Print the process's own VmHWM as it ends (after the sync returned).
            "import atexit,sys;"
            "atexit.register(lambda: print('VmHWM', [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1], file=sys.stderr));"
            "from modelferry.cli.main import main; main()",
            "sync",
            "hf://bench/model",
            f"s3://full/run-{files}",
            "--hf-endpoint",
            tree.url,
            "--target-endpoint",
            tree.url,
            "--addressing-style",
            "path",
            "--trust-size",
            "--json",
        ]
        started = time.monotonic()
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads(proc.stdout)
        assert summary["files"] == files and summary["files_skipped"] == files, summary
        manifest = tree.kept.get(("full", f"run-{files}/.modelferry/manifest.json"))
        assert manifest is not None or tree.written > 0  # large manifests go up in parts (counted, not kept)
        line = [ln for ln in proc.stderr.splitlines() if ln.startswith("VmHWM")][-1]
        print(f"{files} files: peak RSS {int(line.split()[1]) / 1024:.1f} MiB in {time.monotonic() - started:.0f} s")
        return int(line.split()[1]) / 1024


def test_peak_memory_does_not_grow_with_the_number_of_files(tmp_path: Path) -> None:
    small = peak_rss_mib(5_000, tmp_path)
    large = peak_rss_mib(40_000, tmp_path)
    assert large - small < 25, f"peak RSS grew from {small:.1f} to {large:.1f} MiB for 35,000 more files"
