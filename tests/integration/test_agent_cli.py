"""``modelferry agent``: settings, usage errors, and the wired-up agent against the API emulator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelferry.cli.agent import build_agent_settings, run_agent
from modelferry.cli.main import cli
from modelferry.controller.agent.settings import AgentSettings
from modelferry.errors import UsageError
from tests.servers.kube import KubeEmulator


def test_node_name_is_required() -> None:
    with pytest.raises(UsageError, match="node name"):
        build_agent_settings({})
    result = CliRunner().invoke(cli, ["agent"])
    assert isinstance(result.exception, UsageError)


def test_settings_from_env_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFERRY_AGENT__WORKERS", "7")
    monkeypatch.setenv("MODELFERRY_AGENT__WATCH_OME", "true")
    settings = build_agent_settings({"node_name": "n1", "high_watermark": 0.5})
    assert settings.agent.workers == 7 and settings.agent.high_watermark == 0.5
    assert settings.group_version() == ("ome.io", "v1beta1")
    monkeypatch.delenv("MODELFERRY_AGENT__WATCH_OME")
    assert AgentSettings().group_version() == ("modelferry.io", "v1alpha1")
    with pytest.raises(UsageError, match="invalid agent settings"):
        build_agent_settings({"node_name": "n1", "high_watermark": 7})


async def test_run_agent_publishes_configmap(tmp_path: Path) -> None:
    emu = KubeEmulator()
    await emu.start()
    try:
        await emu.put_object("v1", "nodes", {"metadata": {"name": "n1", "labels": {}}})
        settings = build_agent_settings(
            {"node_name": "n1", "namespace": "mf", "models_root": str(tmp_path), "port": 0, "gpu_shape": "GPU.H100.8"}
        )
        stop = asyncio.Event()
        task = asyncio.create_task(run_agent(settings, kubeconfig=None, api_url=emu.url, stop=stop))
        for _ in range(200):
            if emu.get("v1", "configmaps", "mf", "n1") or task.done():
                break
            await asyncio.sleep(0.05)
        assert emu.get("v1", "configmaps", "mf", "n1") is not None
        stop.set()
        await asyncio.wait_for(task, 30)
    finally:
        await emu.stop()
