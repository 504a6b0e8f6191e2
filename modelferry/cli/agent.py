"""``modelferry agent``: the node model agent (runs as a DaemonSet; needs the [controller] extra)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from modelferry.cli.runtime import register_credentials
from modelferry.errors import UsageError
from modelferry.settings import warn_unknown_env

log = logging.getLogger("modelferry.agent")


def build_agent_settings(overrides: dict[str, Any]) -> Any:
    """AgentSettings from the environment with command-line values on top."""
    try:
        import controller.agent.kubeside  # noqa: F401 - fail early, with a hint, without the extra
    except ImportError as exc:
        raise UsageError(
            f"the agent needs the controller extra ({exc.name} is missing)",
            hint="pip install 'modelferry[controller]'",
        ) from exc
    from controller.agent.settings import AgentOptions, AgentSettings

    try:
        settings = AgentSettings()
        agent = settings.agent.model_dump()
        agent.update({k: v for k, v in overrides.items() if v is not None})
        settings.agent = AgentOptions.model_validate(agent)
    except ValidationError as exc:
        raise UsageError(f"invalid agent settings: {exc}", hint="Check MODELFERRY_AGENT__* and the options") from exc
    warn_unknown_env(AgentSettings)
    register_credentials(settings.source)
    if not settings.agent.node_name:
        raise UsageError("the node name is not set", hint="Pass --node-name or set NODE_NAME from the downward API")
    return settings


async def run_agent(
    settings: Any, *, kubeconfig: str | None, api_url: str | None, stop: asyncio.Event | None = None
) -> None:
    """Wire the pieces together and run until SIGTERM/SIGINT (or ``stop``)."""
    from controller.agent.gopher import Gopher
    from controller.agent.health import build_app, root_usable, serve
    from controller.agent.kubeside import NODES, NodeAgent, until_api
    from controller.agent.metrics import AgentMetrics
    from controller.agent.shape import detect_shape
    from controller.agent.tasks import TaskQueue
    from controller.kube.client import Kube, build_api_client
    from controller.kube.watch import Backoff

    opts = settings.agent
    root = Path(opts.models_root)
    kube = Kube(await build_api_client(kubeconfig=kubeconfig, api_url=api_url))
    metrics = AgentMetrics()
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    found: dict[str, Any] = {}

    async def read_node() -> None:
        found["node"] = await kube.get(NODES, None, opts.node_name) or {}

    backoff = Backoff(opts.api_backoff_seconds, opts.api_backoff_max_seconds)
    if not await until_api(read_node, stop, backoff, f"reading node {opts.node_name}"):  # the API may be down
        await kube.close()
        return
    node = found["node"]
    shape = detect_shape(opts.gpu_shape, (node.get("metadata") or {}).get("labels") or {})
    gopher = Gopher(settings, TaskQueue(), sink=_NoSink(), metrics=metrics, shape=shape)
    agent = NodeAgent(settings, kube, gopher, metrics)

    async def api_reachable() -> str | None:
        try:
            await kube.get(NODES, None, opts.node_name)
        except Exception as exc:  # any failure means not ready
            return f"Kubernetes API not reachable: {exc}"
        return None

    async def root_ok() -> str | None:
        return await asyncio.to_thread(root_usable, root, opts.read_only)

    async def workers_alive() -> str | None:
        return None if gopher.alive() else "download workers are not running"

    runner, port = await serve(build_app(metrics, [api_reachable, root_ok], [workers_alive]), opts.port)
    log.info("agent for node %s: models root %s, shape %s, port %s", opts.node_name, root, shape, port)
    try:
        await agent.run(stop)
    finally:
        await runner.cleanup()
        await kube.close()


class _NoSink:
    def publish(self, entry: Any) -> None:  # replaced by NodeAgent at construction
        return None


@click.command("agent")
@click.option("--node-name", envvar="NODE_NAME", default=None, help="This node (env NODE_NAME, downward API).")
@click.option("--namespace", envvar="POD_NAMESPACE", default=None, help="Namespace of the per-node ConfigMaps.")
@click.option("--models-root", default=None, help="Models directory (hostPath) [/mnt/models].")
@click.option("--workers", type=int, default=None, help="Models downloaded at the same time [2].")
@click.option("--read-only", is_flag=True, default=None, help="Never download; report what the root holds.")
@click.option("--high-watermark", type=float, default=None, help="Refuse downloads filling the disk past this [0.9].")
@click.option("--gpu-shape", default=None, help="TensorRT-LLM shape alias, e.g. GPU.H100.8 (else NVML/labels).")
@click.option("--watch-ome", is_flag=True, default=None, help="Watch OME's ome.io/v1beta1 kinds instead.")
@click.option("--port", type=int, default=None, help="Port of /metrics, /healthz, /readyz, /livez [8080].")
@click.option("--kubeconfig", default=None, help="Kubeconfig (in-cluster config when unset).")
@click.option("--api-url", default=None, help="Kubernetes API URL without auth (kubectl proxy, tests).")
def agent_command(kubeconfig: str | None, api_url: str | None, **options: Any) -> None:
    """Keep BaseModel/ClusterBaseModel models on this node (run as a DaemonSet).

    Every option also has a MODELFERRY_AGENT__<NAME> variable; transfer tuning and
    default credentials come from MODELFERRY_TRANSFER__* and MODELFERRY_SOURCE__*.

    \b
    Example (outside a cluster, against kubectl proxy):
      modelferry agent --node-name worker-1 --models-root /tmp/models --api-url http://127.0.0.1:8001
    """
    settings = build_agent_settings(options)
    if not settings.agent.read_only:
        Path(settings.agent.models_root).mkdir(parents=True, exist_ok=True)
    asyncio.run(run_agent(settings, kubeconfig=kubeconfig, api_url=api_url))
