"""The controller process: one asyncio TaskGroup of named tasks, a Lease, /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from controller.kube.client import Kube, build_api_client
from controller.kube.lease import LeaderElector
from controller.operator.jobs import job_phase
from controller.operator.reconcile import Operator
from controller.operator.settings import ControllerSettings
from modelferry.errors import ModelferryError

log = logging.getLogger(__name__)


class Metrics:
    """Prometheus metrics of one controller (its own registry, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "modelferry_controller_reconciles_total", "Reconciles by kind and result", ["kind", "result"],
            registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "modelferry_controller_reconcile_errors_total",
            "Failed reconciles by kind",
            ["kind"],
            registry=self.registry,
        )
        self.queue_depth = Gauge("modelferry_controller_queue_depth", "Keys waiting", registry=self.registry)
        self.jobs = Gauge("modelferry_controller_jobs", "Managed Jobs by phase", ["phase"], registry=self.registry)
        self.leader = Gauge("modelferry_controller_leader", "1 while this replica leads", registry=self.registry)


class Controller:
    """Wires the operator, leader election, workers and the health server together."""

    def __init__(self, kube: Kube, settings: ControllerSettings) -> None:
        self.kube = kube
        self.settings = settings
        self.operator = Operator(kube, settings)
        self.metrics = Metrics()
        self.stop = asyncio.Event()
        self.started = asyncio.Event()
        self.port: int | None = None
        identity = settings.identity or f"{socket.gethostname()}-{os.getpid()}"
        namespace = settings.lease_namespace or _pod_namespace()
        self.elector = LeaderElector(
            kube,
            namespace,
            settings.lease_name,
            identity,
            duration=settings.lease_duration_seconds,
            renew=settings.renew_seconds,
        )
        self._runner: web.AppRunner | None = None

    # --- health and metrics ----------------------------------------------------------------------
    def ready(self) -> bool:
        """Ready once started: a standby replica is ready too; the leader once its caches are filled."""
        if not self.started.is_set():
            return False
        if self.settings.leader_election and not self.elector.is_leader.is_set():
            return True
        return all(inf.synced.is_set() for inf in self.operator.informers)

    async def _metrics(self, _request: web.Request) -> web.Response:
        self.metrics.queue_depth.set(len(self.operator.queue))
        self.metrics.leader.set(1 if self.elector.is_leader.is_set() or not self.settings.leader_election else 0)
        counts = {"Pending": 0, "Running": 0, "Succeeded": 0, "Failed": 0}
        for inf in self.operator.jobs.values():
            for job in inf.items():
                counts[job_phase(job)] += 1
        for phase, count in counts.items():
            self.metrics.jobs.labels(phase=phase).set(count)
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok") if self.ready() else web.Response(status=503, text="not ready")

    async def start_server(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.metrics_host, self.settings.metrics_port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.metrics_port
        log.info("serving /metrics /healthz /readyz on port %s", self.port)

    # --- work --------------------------------------------------------------------------------------
    async def _worker(self) -> None:
        queue = self.operator.queue
        while True:
            key = await queue.get()
            kind = str(key[0]) if isinstance(key, tuple) else "unknown"
            try:
                await self.operator.reconcile(key)
            except ModelferryError as exc:
                delay = queue.retry(key)
                self.metrics.errors.labels(kind=kind).inc()
                self.metrics.reconciles.labels(kind=kind, result="error").inc()
                log.warning("reconcile %s failed: %s; retrying in %.1fs", key, exc, delay)
            except Exception:
                delay = queue.retry(key)
                self.metrics.errors.labels(kind=kind).inc()
                self.metrics.reconciles.labels(kind=kind, result="error").inc()
                log.exception("reconcile %s crashed; retrying in %.1fs", key, delay)
            else:
                queue.forget(key)
                self.metrics.reconciles.labels(kind=kind, result="ok").inc()
            finally:
                queue.done(key)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            self.operator.resync()

    async def _watch_lease(self) -> None:
        await self.elector.lost.wait()
        self.stop.set()

    async def _wait_synced(self) -> None:
        waits = [asyncio.create_task(inf.synced.wait()) for inf in self.operator.informers]
        stopper = asyncio.create_task(self.stop.wait())
        pending: set[asyncio.Task[Any]] = {*waits}
        while pending and not self.stop.is_set():
            _, pending = await asyncio.wait({*pending, stopper}, return_when=asyncio.FIRST_COMPLETED)
            pending.discard(stopper)
        for task in (*waits, stopper):
            task.cancel()

    async def _drain(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Stop taking work, let running reconciles finish within the deadline, then cancel the rest."""
        queue = self.operator.queue
        queue.close()
        try:
            await asyncio.wait_for(queue.idle.wait(), timeout=self.settings.shutdown_seconds)
        except TimeoutError:
            log.warning(
                "%d reconciles still running after %.0fs: cancelling", queue.busy, self.settings.shutdown_seconds
            )
        for task in tasks:
            task.cancel()

    async def run(self) -> int:
        """Until :attr:`stop` is set: 0 on a clean stop, 1 when the Lease was lost."""
        await self.start_server()
        lease_task: asyncio.Task[None] | None = None
        try:
            self.started.set()
            if self.settings.leader_election:
                lease_task = asyncio.create_task(self.elector.run(), name="lease")
                waiter = asyncio.create_task(self.elector.is_leader.wait())
                stopper = asyncio.create_task(self.stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                if self.stop.is_set():
                    return 0
            async with asyncio.TaskGroup() as group:
                tasks: list[asyncio.Task[Any]] = []
                for inf in self.operator.informers:
                    tasks.append(
                        group.create_task(inf.run(), name=f"watch-{inf.resource.plural}-{inf.namespace or 'all'}")
                    )
                # Decisions read the caches: reconcile only once every informer has listed.
                await self._wait_synced()
                for i in range(self.settings.workers):
                    tasks.append(group.create_task(self._worker(), name=f"worker-{i}"))
                tasks.append(group.create_task(self._resync(), name="resync"))
                if self.settings.aggregate_models:
                    from controller.agent.aggregate import run_aggregator

                    tasks.append(
                        group.create_task(
                            run_aggregator(
                                self.kube,
                                self.settings.agent_namespace,
                                self.stop,
                                interval=self.settings.aggregate_seconds,
                                group=self.settings.aggregate_api.split("/")[0],
                                version=self.settings.aggregate_api.split("/")[1],
                            ),
                            name="model-status",
                        )
                    )
                if self.settings.leader_election:
                    tasks.append(group.create_task(self._watch_lease(), name="lease-watch"))
                await self.stop.wait()
                await self._drain(tasks)
            return 1 if self.elector.lost.is_set() else 0
        finally:
            if lease_task is not None:
                lease_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lease_task
                await self.elector.release()
            if self._runner is not None:
                await self._runner.cleanup()


def _pod_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path) as fh:
            return fh.read().strip() or "default"
    except OSError:
        return os.environ.get("POD_NAMESPACE", "default")


async def serve(settings: ControllerSettings) -> int:
    """Entry point of ``modelferry controller``: SIGTERM/SIGINT stop it gracefully."""
    api = await build_api_client(kubeconfig=settings.kubeconfig, api_url=settings.api_url)
    kube = Kube(api)
    controller = Controller(kube, settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, controller.stop.set)
    try:
        return await controller.run()
    finally:
        await kube.close()
