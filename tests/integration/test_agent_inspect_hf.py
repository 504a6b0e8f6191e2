"""``modelferry inspect hf://...`` reads config.json and only the safetensors headers (ranged GETs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelferry.cli.main import cli
from tests.integration.test_agent_kube import write_model
from tests.servers.hfhub import FakeHub, HubRepo


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


def test_inspect_hub_repo_fetches_headers_only(hub: FakeHub, tmp_path: Path) -> None:
    params = write_model(tmp_path / "repo", 1024, layers=4)  # 8 MiB of weights
    size = (tmp_path / "repo" / "model.safetensors").stat().st_size
    hub.add(HubRepo.from_dir("org/tiny-llama", tmp_path / "repo"))
    result = CliRunner().invoke(cli, ["inspect", "--json", "--hf-endpoint", hub.url, "hf://org/tiny-llama"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)  # logs go to stderr; stdout is the JSON alone
    assert body["parameters"] == params and body["modelArchitecture"] == "LlamaForCausalLM"
    gets = hub.file_gets("model.safetensors")
    assert gets, "the header must be read from the hub"
    fetched = sum((r.range[1] - r.range[0] + 1) if r.range else size for r in gets)
    assert fetched < 64 * 1024 < size  # only the header, never the weights


def test_inspect_missing_repo_is_not_found(hub: FakeHub) -> None:
    result = CliRunner().invoke(cli, ["inspect", "--hf-endpoint", hub.url, "hf://org/nope"])
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "NotFoundError"
