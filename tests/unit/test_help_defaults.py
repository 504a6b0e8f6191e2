"""Every default that ``--help`` shows in brackets is the real default of the settings model."""

from __future__ import annotations

import re

import click
import pytest
from pydantic import BaseModel

from modelferry.cli.main import cli
from modelferry.controller.agent.settings import AgentOptions
from modelferry.controller.config.controller import ControllerSettings
from modelferry.settings import TransferSettings, shown_default

# option -> (settings model, field) it sets
SOURCES: dict[tuple[str, str], tuple[type[BaseModel], str]] = {
    ("sync", "--concurrency"): (TransferSettings, "concurrency"),
    ("sync", "--part-size"): (TransferSettings, "part_size"),
    ("sync", "--size-limit"): (TransferSettings, "size_limit"),
    ("sync", "--retries"): (TransferSettings, "retries"),
    ("upload", "--concurrency"): (TransferSettings, "concurrency"),
    ("agent", "--workers"): (AgentOptions, "workers"),
    ("agent", "--high-watermark"): (AgentOptions, "high_watermark"),
    ("agent", "--port"): (AgentOptions, "port"),
    ("agent", "--models-root"): (AgentOptions, "models_root"),
    ("controller", "--metrics-port"): (ControllerSettings, "metrics_port"),
    ("controller", "--model-source-secret"): (ControllerSettings, "model_source_secret"),
    ("controller", "--data-connection"): (ControllerSettings, "data_connection"),
}
_BRACKET = re.compile(r"\[([^\]]+)\]\.?$")


def shown(command: str, option: str) -> str | None:
    assert isinstance(cli, click.Group)
    cmd = cli.get_command(click.Context(cli), command)
    assert cmd is not None
    [param] = [p for p in cmd.params if isinstance(p, click.Option) and option in p.opts]
    match = _BRACKET.search((param.help or "").strip())
    return match[1].split(";")[0].strip() if match else None  # "[2; 5 OME]": our default comes first


@pytest.mark.parametrize(("command", "option"), sorted(SOURCES))
def test_help_default_is_the_settings_default(command: str, option: str) -> None:
    model, field = SOURCES[(command, option)]
    assert shown(command, option) == shown_default(model, field)


def test_the_concurrency_help_says_64() -> None:
    assert shown("sync", "--concurrency") == "64" == str(TransferSettings().concurrency)
    assert shown_default(TransferSettings, "part_size") == "64MiB"
