"""A controller harness for integration tests: the emulator plus controllers run as tasks."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from modelferry.controller.config.controller import ControllerSettings
from modelferry.controller.kube.client import Kube, build_api_client
from modelferry.controller.operator.process import Controller
from tests.servers.kube import KubeEmulator
from tests.servers.kube_real import RealKube

NS = "demo"


async def eventually(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll until ``predicate()`` is truthy (the controller works asynchronously).

    The bound only matters when a test fails: 10 s ran out once on a 2-core machine under a benchmark.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(emulator: KubeEmulator | RealKube) -> AsyncIterator[Harness]:
    """Start ``emulator`` and a harness over it; stop the controllers, then the emulator."""
    await emulator.start()
    harness = Harness(emulator)
    try:
        yield harness
    finally:
        await harness.close()
        await emulator.stop()


class Harness:
    def __init__(self, emulator: KubeEmulator | RealKube) -> None:
        self.emu = emulator
        self.controllers: list[tuple[Controller, Kube, asyncio.Task[int]]] = []

    def settings(self, **kw: Any) -> ControllerSettings:
        base: dict[str, Any] = {
            "api_url": self.emu.url,
            "metrics_host": "127.0.0.1",
            "metrics_port": 0,
            "namespaces": [NS],
            "lease_namespace": NS,
            "lease_duration_seconds": 3.0,
            "renew_deadline_seconds": 2.0,
            "retry_period_seconds": 0.2,
            "watch_backoff_seconds": 0.05,
            "watch_backoff_max_seconds": 0.5,
            "watch_timeout_seconds": 5,
            "resync_seconds": 60,
            "backoff_base": 0.05,
            "backoff_max": 0.5,
            "shutdown_seconds": 2,
        }
        base.update(kw)
        return ControllerSettings(**base)

    async def start(self, **kw: Any) -> Controller:
        settings = self.settings(**kw)
        kube = Kube(await build_api_client(api_url=settings.api_url))
        controller = Controller(kube, settings)
        task = asyncio.create_task(controller.run())
        self.controllers.append((controller, kube, task))
        return controller

    async def stop(self, controller: Controller) -> int:
        for c, kube, task in self.controllers:
            if c is controller:
                c.stop.set()
                code = await asyncio.wait_for(task, 10)
                await kube.close()
                self.controllers.remove((c, kube, task))
                return code
        raise AssertionError("unknown controller")

    async def close(self) -> None:
        for c, _, _ in list(self.controllers):
            await self.stop(c)

    async def reconciled(
        self, controller: Controller, key: tuple[str, str, str], *changed: dict[str, Any], timeout: float = 10.0
    ) -> None:
        """Until a reconcile of ``key`` has finished that began once ``changed`` were in the controller's caches.

        Each object of ``changed`` (as applied, or as last read) is looked up on the server: the controller's
        informers of its kind must hold the server's current resourceVersion of it (the change, or a later
        one), or no longer hold it once it is deleted. Then the key is queued and the test waits for a reconcile that started after that: reconciles
        of one key never overlap, so that one saw every change. A test that shows "nothing happened" waits
        here instead of sleeping (a sleep passes whether or not the controller ever looked).
        """
        op = controller.operator
        informers = [*op.informers, *op.dependent]
        for obj in changed:
            api, kind, meta = obj["apiVersion"], obj["kind"], obj.get("metadata") or {}
            ns, name = meta.get("namespace") or "", meta["name"]
            mine = [i for i in informers if (i.resource.api_version, i.resource.kind) == (api, kind)]
            assert mine, f"the controller does not watch {kind}"
            plural = mine[0].resource.plural

            def in_caches(ns: str = ns, name: str = name, mine: list[Any] = mine, plural: str = plural) -> bool:
                # the server's version now (the controller may have written it since the test did)
                live = self.emu.get(mine[0].resource.api_version, plural, ns, name)
                version = (live or {}).get("metadata", {}).get("resourceVersion")
                held = [
                    (i.get(ns, name) or {}).get("metadata", {}).get("resourceVersion")
                    for i in mine
                    if i.get(ns, name) is not None
                ]
                return not held if version is None else bool(held) and all(v == version for v in held)

            await eventually(in_caches, timeout)
        mark = op.started_keys[key]
        op.queue.add(key)
        await eventually(lambda: op.finished_keys[key] > mark, timeout)

    def job(self, name: str = "synchronize-model") -> dict[str, Any] | None:
        return self.emu.get("batch/v1", "jobs", NS, name)

    def pod_labels(self, job: str) -> dict[str, str]:
        """The labels the Job controller gives a Job's Pods: its template's, plus ``job-name``."""
        live = self.job(job) or {}
        template = ((live.get("spec") or {}).get("template") or {}).get("metadata") or {}
        return {**(template.get("labels") or {}), "job-name": job}

    def events(self, reason: str) -> list[dict[str, Any]]:
        return [e for e in self.emu.all("v1", "events", NS) if e.get("reason") == reason]

    async def apply(self, obj: dict[str, Any], api: str = "v1", plural: str = "secrets") -> None:
        await self.emu.put_object(api, plural, json.loads(json.dumps(obj)))
