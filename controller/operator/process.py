"""The controller process: watches, a Lease, workers while leading, /metrics, /healthz, /readyz.

The watches start at the first leadership and run until SIGTERM, so a replica that loses the Lease keeps
its caches warm; workers, the resync loop and the status roll-up run only while it leads. Nothing but
SIGTERM/SIGINT ends the process: API faults make it wait, retry, stand by and campaign again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import time
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from modelferry.controller.config.controller import ControllerSettings
from modelferry.controller.kube.client import Kube, build_api_client
from modelferry.controller.kube.lease import LeaderElector
from modelferry.controller.operator.router import Operator
from modelferry.controller.workload.jobstatus import job_phase
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
        self.loop_busy = Gauge(
            "modelferry_controller_event_loop_busy_seconds_max",
            "Longest CPU time the event loop spent without a 50 ms timer getting its turn (a stall), since start",
            registry=self.registry,
        )
        self.loop_lag = Gauge(
            "modelferry_controller_event_loop_lag_seconds_max",
            "Longest wall-clock delay of a 50 ms timer on the event loop since start (includes CPU starvation)",
            registry=self.registry,
        )


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
            lease_duration=settings.lease_duration_seconds,
            renew_deadline=settings.renew_deadline_seconds,
            retry_period=settings.retry_period_seconds,
        )
        self.acting = asyncio.Event()  # set while this replica leads with synced caches and runs workers
        self._runner: web.AppRunner | None = None

    # --- health and metrics ----------------------------------------------------------------------
    def ready(self) -> bool:
        """Ready while acting: leading (or leader election off) with every cache filled; a standby is not."""
        return self.started.is_set() and self.acting.is_set()

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
        if self.ready():
            return web.Response(text="ok: leading" if self.settings.leader_election else "ok")
        if self.settings.leader_election and not self.elector.is_leader.is_set():
            holder = f" (held by {self.elector.other_holder})" if self.elector.other_holder else ""
            return web.Response(status=503, text=f"standby: not the leader{holder}")
        return web.Response(status=503, text="not ready: filling caches")

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
            # A reconcile served from the caches never suspends: without this a worker would run every due
            # key (a resync: all of them) in one turn of the event loop and stall it.
            await asyncio.sleep(0)
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

    async def _watch_loop(self, interval: float = 0.05) -> None:
        """Record event-loop stalls: CPU spent (a stall) and wall delay (a stall or a starved process)."""
        loop = asyncio.get_running_loop()
        busy_max = lag_max = 0.0
        while True:
            wall, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(interval)
            busy_max = max(busy_max, time.thread_time() - cpu)
            lag_max = max(lag_max, loop.time() - wall - interval)
            self.metrics.loop_busy.set(busy_max)
            self.metrics.loop_lag.set(lag_max)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            self.operator.resync()

    async def _first(self, *events: asyncio.Event) -> None:
        """Wait until any of ``events`` is set."""
        waiters = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _interruptions(self) -> list[asyncio.Event]:
        """What ends acting: SIGTERM, and the loss of the Lease."""
        return [self.stop, self.elector.standby] if self.settings.leader_election else [self.stop]

    def _leading(self) -> bool:
        return not self.stop.is_set() and (not self.settings.leader_election or self.elector.is_leader.is_set())

    async def _wait_synced(self, informers: list[Any]) -> bool:
        """Until every informer has listed; False when stopped or no longer leading first."""
        for inf in informers:
            while not inf.synced.is_set():
                if not self._leading():
                    return False
                await self._first(inf.synced, *self._interruptions())
        return self._leading()

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
        await _cancel(tasks)

    def _start_acting(self) -> list[asyncio.Task[Any]]:
        self.operator.queue.reopen()
        self.operator.resync()  # level-triggered: whatever changed while standing by is looked at again
        tasks = [asyncio.create_task(self._worker(), name=f"worker-{i}") for i in range(self.settings.workers)]
        tasks.append(asyncio.create_task(self._resync(), name="resync"))
        if self.settings.aggregate_models:
            from modelferry.controller.agent.aggregate import run_aggregator

            group, _, version = self.settings.aggregate_api.partition("/")
            aggregate = run_aggregator(
                self.kube,
                self.settings.agent_namespace,
                self.stop,
                interval=self.settings.aggregate_seconds,
                group=group,
                version=version,
            )
            tasks.append(asyncio.create_task(aggregate, name="model-status"))
        self.acting.set()
        return tasks

    def _start_watches(self, tasks: list[asyncio.Task[None]], informers: list[Any]) -> None:
        running = {t.get_name() for t in tasks}
        for informer in informers:
            name = f"watch-{informer.name}-{id(informer)}"
            if name not in running:
                tasks.append(asyncio.create_task(informer.run(), name=name))

    async def run(self) -> int:
        """Until :attr:`stop` (SIGTERM): lead, act, stand by when the Lease is lost, campaign again. Returns 0."""
        await self.start_server()
        lease_task: asyncio.Task[None] | None = None
        watches: list[asyncio.Task[None]] = [asyncio.create_task(self._watch_loop(), name="loop-monitor")]
        try:
            self.started.set()
            if self.settings.leader_election:
                lease_task = asyncio.create_task(self.elector.run(), name="lease")
            while not self.stop.is_set():
                if self.settings.leader_election:
                    await self._first(self.elector.is_leader, self.stop)
                    if self.stop.is_set():
                        break
                # Watches start at the first leadership and are kept (with their caches) when it is lost.
                self._start_watches(watches, self.operator.informers)
                # Decisions read the caches: act only once every informer has listed. Referenced Secrets are
                # listed after the objects that name them, so the list fills the index in one pass.
                if not await self._wait_synced(self.operator.informers):
                    continue
                self._start_watches(watches, self.operator.dependent)
                if not await self._wait_synced(self.operator.dependent):
                    continue
                tasks = self._start_acting()
                log.info("acting: %d workers", self.settings.workers)
                await self._first(*self._interruptions())
                self.acting.clear()
                if self.stop.is_set():
                    await self._drain(tasks)
                else:
                    log.warning("leadership lost: stopping work, keeping caches, campaigning again")
                    self.operator.queue.close()
                    await _cancel(tasks)
            return 0
        finally:
            self.acting.clear()
            await _cancel(watches)
            if lease_task is not None:
                await _cancel([lease_task])
                await self.elector.release()
            if self._runner is not None:
                await self._runner.cleanup()


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _pod_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path) as fh:
            return fh.read().strip() or "default"
    except OSError:
        return os.environ.get("POD_NAMESPACE", "default")


async def serve(settings: ControllerSettings) -> int:
    """Entry point of ``modelferry controller``: SIGTERM/SIGINT stop it gracefully."""
    # Imported on first use by the status roll-up: import it now, before the event loop has work.
    importlib.import_module("modelferry.controller.agent.aggregate")

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
