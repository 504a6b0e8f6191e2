"""``modelferry controller`` (the operator) and ``modelferry noop`` (the manual-upload-complete Job)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click
from pydantic import BaseModel, Field, ValidationError

from modelferry.cli.dataplane import write_termination_message
from modelferry.errors import UsageError
from modelferry.settings import SyncSettings, warn_unknown_env

log = logging.getLogger("modelferry.controller")


@click.command("controller")
@click.option("--namespace", "namespaces", multiple=True, help="Namespace to watch (repeatable) [all].")
@click.option("--kubeconfig", default=None, help="Kubeconfig file [in-cluster, then ~/.kube/config].")
@click.option("--api-url", default=None, help="API server URL without authentication (kubectl proxy).")
@click.option("--metrics-port", type=int, default=None, help="Port of /metrics, /healthz and /readyz [8080].")
@click.option("--image", default=None, help="Image of the sync Jobs (env MODELFERRY_CONTROLLER__JOB__IMAGE).")
@click.option("--model-source-secret", default=None, help="Name of the Secret that drives Secret mode [model-source].")
@click.option("--data-connection", default=None, help="Default destination data connection [demo-models].")
@click.option("--no-leader-election", is_flag=True, help="Act without a Lease (one replica only).")
def controller_command(
    namespaces: tuple[str, ...],
    kubeconfig: str | None,
    api_url: str | None,
    metrics_port: int | None,
    image: str | None,
    model_source_secret: str | None,
    data_connection: str | None,
    no_leader_election: bool,
) -> int:
    """Run the operator: model-source Secrets and ModelSync resources become sync Jobs.

    Every option has a MODELFERRY_CONTROLLER__* variable (nested with __), e.g.
    MODELFERRY_CONTROLLER__NAMESPACES='["demo"]', MODELFERRY_CONTROLLER__JOB__BACKOFF_LIMIT=3.
    """
    from modelferry.controller.config.controller import ControllerSettings
    from modelferry.controller.operator.process import serve

    class _Env(BaseModel):
        controller: ControllerSettings = Field(description="controller settings")

    overrides: dict[str, Any] = {
        "namespaces": list(namespaces) or None,
        "kubeconfig": kubeconfig,
        "api_url": api_url,
        "metrics_port": metrics_port,
        "model_source_secret": model_source_secret,
        "data_connection": data_connection,
        "leader_election": False if no_leader_election else None,
    }
    try:
        settings = ControllerSettings(**{k: v for k, v in overrides.items() if v is not None})
        if image:
            settings.job.image = image
    except ValidationError as exc:
        raise UsageError(
            f"invalid controller settings: {exc}", hint="Check MODELFERRY_CONTROLLER__* variables"
        ) from exc
    warn_unknown_env(SyncSettings, _Env)
    log.info("starting controller (namespaces: %s)", ",".join(settings.namespaces) or "all")
    return asyncio.run(serve(settings))


@click.command("noop")
@click.option("--reason", required=True, help="Why there is nothing to do (logged and written to the termination log).")
@click.option("--termination-log", default="/dev/termination-log", help="Kubernetes termination message file.")
def noop_command(reason: str, termination_log: str) -> int:
    """Complete at once, saying why (the Job of a manual-upload-complete model-source Secret)."""
    log.info("nothing to synchronize: %s", reason)
    click.echo(f"nothing to synchronize: {reason}")
    write_termination_message(termination_log, {"status": "complete", "reason": "NothingToDo", "message": reason})
    return 0
