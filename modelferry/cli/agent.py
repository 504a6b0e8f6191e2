"""``modelferry agent``: the node model agent (runs as a DaemonSet; needs the [controller] extra)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr, ValidationError

from modelferry.cli.dataplane import register_credentials
from modelferry.errors import UsageError
from modelferry.settings import warn_unknown_env

log = logging.getLogger("modelferry.agent")


def build_agent_settings(overrides: dict[str, Any]) -> Any:
    """AgentSettings from the environment with command-line values on top."""
    try:
        import modelferry.controller.agent.kubeside  # noqa: F401 - fail early, with a hint, without the extra
    except ImportError as exc:
        raise UsageError(
            f"the agent needs the controller extra ({exc.name} is missing)",
            hint="pip install 'modelferry[controller]'",
        ) from exc
    from modelferry.controller.agent.settings import OME_DEFAULTS, AgentOptions, AgentSettings

    given = {k: v for k, v in overrides.items() if v is not None}
    files, parts = given.pop("concurrency", None), given.pop("multipart_concurrency", None)
    try:
        settings = AgentSettings()
        agent = settings.agent.model_dump()
        agent.update(given)
        if agent.get("watch_ome"):
            # OME's defaults for what neither the environment nor an option set.
            unset = set(OME_DEFAULTS) - settings.agent.model_fields_set - set(given)
            agent.update({k: OME_DEFAULTS[k] for k in unset})
        settings.agent = AgentOptions.model_validate(agent)
        if files or parts:
            # OME's files-per-model x parts-per-file is our one connection budget.
            settings.transfer.concurrency = min(256, max(1, (files or 4) * (parts or 4)))
    except ValidationError as exc:
        raise UsageError(f"invalid agent settings: {exc}", hint="Check MODELFERRY_AGENT__* and the options") from exc
    warn_unknown_env(AgentSettings)
    apply_ome_environment(settings, os.environ)
    register_credentials(settings.source)
    if not settings.agent.node_name:
        raise UsageError("the node name is not set", hint="Pass --node-name or set NODE_NAME from the downward API")
    return settings


def apply_ome_environment(settings: Any, environ: Mapping[str, str]) -> None:
    """OME's model agent variables: ``OCI_CONFIG_FILE`` and ``HUGGINGFACE_TOKEN`` (ours win when set)."""
    oci_config = environ.get("OCI_CONFIG_FILE")
    if oci_config and not settings.source.oci.config_file:
        settings.source.oci.config_file = oci_config
    token = environ.get("HUGGINGFACE_TOKEN", "").strip()
    hf = settings.source.hf
    if token and hf.token is None and not hf.token_file and not environ.get("HF_TOKEN"):
        hf.token = SecretStr(token)


async def run_agent(
    settings: Any, *, kubeconfig: str | None, api_url: str | None, stop: asyncio.Event | None = None
) -> None:
    """Wire the pieces together and run until SIGTERM/SIGINT (or ``stop``)."""
    from modelferry.controller.agent.gopher import Gopher
    from modelferry.controller.agent.health import build_app, root_usable, serve
    from modelferry.controller.agent.kubeside import NodeAgent, until_api
    from modelferry.controller.agent.metrics import AgentMetrics
    from modelferry.controller.agent.shape import detect_shape
    from modelferry.controller.agent.tasks import TaskQueue
    from modelferry.controller.kube.client import NODES, Kube, build_api_client
    from modelferry.controller.kube.watch import Backoff

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
    runners = [runner]
    if opts.metrics_port is not None and opts.metrics_port != opts.port:
        metrics_runner, metrics_port = await serve(build_app(metrics, [], []), opts.metrics_port)
        runners.append(metrics_runner)
        log.info("metrics also on port %s", metrics_port)
    if opts.temp_dir:
        log.info("--temp-dir %s accepted: downloads stage beside each model (one write, atomic swap)", opts.temp_dir)
    log.info("agent for node %s: models root %s, shape %s, port %s", opts.node_name, root, shape, port)
    try:
        await agent.run(stop)
    finally:
        for each in runners:
            await each.cleanup()
        await kube.close()


class _NoSink:
    def publish(self, entry: Any) -> None:  # replaced by NodeAgent at construction
        return None


# OME's boolean flags are Go flags: `--cleanup-temp=false` is how one turns them off.
BOOL_FLAGS = ("--cleanup-temp", "--read-only", "--watch-ome")


def normalize_bool_flags(args: list[str]) -> list[str]:
    """``--flag=true|false`` (Go style) as click's ``--flag`` / ``--no-flag`` (pure)."""
    out = []
    for arg in args:
        name, eq, value = arg.partition("=")
        if eq and name in BOOL_FLAGS:
            truth = value.strip().lower()
            if truth not in ("true", "false", "1", "0", "t", "f"):
                raise click.BadParameter(f"{value!r} is not a boolean (true or false)", param_hint=name)
            out.append(name if truth in ("true", "1", "t") else "--no-" + name[2:])
            continue
        out.append(arg)
    return out


class AgentCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, normalize_bool_flags(args))


def _duration(value: str | None) -> float | None:
    if value is None:
        return None
    from modelferry.controller.agent.settings import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def settings_from_options(options: dict[str, Any]) -> Any:
    """AgentSettings from the parsed command-line options (Go durations converted)."""
    options = dict(options)
    for key in ("reconcile_interval", "resync_interval"):
        options[key] = _duration(options.get(key))
    return build_agent_settings(options)


@click.command("agent", cls=AgentCommand)
@click.option("--node-name", envvar="NODE_NAME", default=None, help="This node (env NODE_NAME, downward API).")
@click.option("--namespace", envvar="POD_NAMESPACE", default=None, help="Namespace of the per-node ConfigMaps.")
@click.option("--models-root", "--models-root-dir", "models_root", default=None, help="Models directory [/mnt/models].")
@click.option(
    "--workers", "--num-download-worker", "workers", type=int, default=None, help="Models at once [2; 5 OME]."
)
@click.option("--download-retry", "download_retries", type=int, default=None, help="Whole-model retries [3].")
@click.option("--node-label-retry", "label_retries", type=int, default=None, help="Label/ConfigMap retries [5].")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="OME: files at once per model (x multipart) [engine: 64].",
)
@click.option(
    "--multipart-concurrency", type=click.IntRange(min=1), default=None, help="OME: ranged parts at once per file."
)
@click.option("--temp-dir", default=None, help="OME --temp-dir: accepted; downloads stage beside the model.")
@click.option("--cleanup-temp/--no-cleanup-temp", default=None, help="Remove a failed download's staging [true].")
@click.option("--read-only/--no-read-only", default=None, help="Never download; report what the root holds.")
@click.option("--high-watermark", type=float, default=None, help="Refuse downloads filling the disk past this [0.9].")
@click.option("--gpu-shape", default=None, help="TensorRT-LLM shape alias, e.g. GPU.H100.8 (else NVML/labels).")
@click.option("--watch-ome/--no-watch-ome", default=None, help="Watch OME's ome.io/v1beta1 kinds, OME labels.")
@click.option("--port", type=int, default=None, help="Port of /metrics, /healthz, /readyz, /livez [8080].")
@click.option("--metrics-port", type=int, default=None, help="Also serve /metrics on this port [--port].")
@click.option("--config-map-sync-interval", "reconcile_interval", default=None, help="Healing pass [300s; 30s OME].")
@click.option("--model-watch-resync-period", "resync_interval", default=None, help="Full relist period [10m].")
@click.option("--max-concurrent-reconciles", type=int, default=None, help="OME: accepted (one loop per node) [10].")
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
    settings = settings_from_options(options)
    if not settings.agent.read_only:
        Path(settings.agent.models_root).mkdir(parents=True, exist_ok=True)
    asyncio.run(run_agent(settings, kubeconfig=kubeconfig, api_url=api_url))
