"""What a first-time user of ``modelferry sync`` meets: one-line errors in their units, dry runs that need no target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def modelferry(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelferry", *argv],
        env={**os.environ, "MODELFERRY_TERMINATION_LOG": "", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def no_aws_credentials() -> dict[str, str]:
    """An environment where botocore finds no credentials anywhere (and never asks instance metadata)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODELFERRY_TARGET__", "MODELFERRY_SOURCE__"))
    }
    return {**env, "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true", "MODELFERRY_TERMINATION_LOG": ""}  # fmt: skip


@pytest.fixture
def model(tmp_path: Path) -> Path:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    return tmp_path / "model"


def test_a_bad_part_size_is_one_line_in_the_users_units(model: Path, tmp_path: Path) -> None:
    done = modelferry("sync", str(model), str(tmp_path / "out"), "--part-size", "0")
    assert done.returncode == 2
    [line] = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert "--part-size (MODELFERRY_TRANSFER__PART_SIZE) must be at least 1MiB, got 0" in line
    assert "pydantic" not in done.stderr and "1048576" not in done.stderr


def test_a_bad_variable_names_the_variable(model: Path, tmp_path: Path) -> None:
    done = modelferry("sync", str(model), str(tmp_path / "out"), env={"MODELFERRY_TRANSFER__CONCURRENCY": "0"})
    assert done.returncode == 2
    assert "MODELFERRY_TRANSFER__CONCURRENCY) must be at least 1, got 0" in done.stderr


def test_size_examples_are_valid_sizes(model: Path, tmp_path: Path) -> None:
    done = modelferry("sync", str(model), str(tmp_path / "out"), "--part-size", "lots")
    assert done.returncode == 2
    examples = done.stderr.split("examples:")[1].split(")")[0]
    for example in examples.split(","):  # every example offered must itself be accepted as a part size
        ok = modelferry("sync", str(model), str(tmp_path / "out"), "--part-size", example.strip(), "--dry-run")
        assert ok.returncode == 0, (example, ok.stderr)


def test_dry_run_of_a_local_source_needs_no_target_credentials(model: Path) -> None:
    done = modelferry("sync", str(model), "s3://bucket/models", "--dry-run", "--json", env=no_aws_credentials())
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "planned"
    assert "every file is planned as a copy" in done.stderr


def test_a_real_run_without_target_credentials_still_fails_permanently(model: Path) -> None:
    done = modelferry("sync", str(model), "s3://bucket/models", env=no_aws_credentials())
    assert done.returncode == 3
    assert "credentials" in done.stderr
