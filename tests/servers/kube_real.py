"""The emulator's test-facing interface over a real kube-apiserver, so one suite runs on both backends.

Components under test talk to ``url``: a recording loopback proxy that forwards every request to the API
server with the component's own ServiceAccount token (so RBAC applies to all of their work) and records
``requests`` like the emulator does. ``gone_next`` answers a plural's next watch with 410 Gone at the proxy
(the one fault a real server cannot be told to produce). Tests read and write through ``get``/``all``/
``put_object``/``set_status``/``remove`` as the cluster admin; where the emulator stores what a test hands
it, this backend plays the kubelet and the Job controller: it completes a Pod's spec and container
statuses and a Job's terminal status the way those components would, because the real server validates
them. ``stop()`` deletes every object the test left behind in its namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from tests.servers.envtest import ApiError, ControlPlane
from tests.servers.kube_training import log_text

CLUSTER_SCOPED = {"nodes", "namespaces", "clusterbasemodels", "nodeagents"}
CLEANED = {
    "v1": ("pods", "secrets", "configmaps", "events", "services"),
    "batch/v1": ("jobs",),
    "apps/v1": ("deployments", "daemonsets"),
    "coordination.k8s.io/v1": ("leases",),
    "modelferry.io/v1alpha1": ("modelsyncs", "trainingruns", "basemodels", "modelservers"),
}
CLEANED_CLUSTER = {"v1": ("nodes",), "modelferry.io/v1alpha1": ("clusterbasemodels", "nodeagents")}


def path_of(api: str, plural: str, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
    base = "/api/v1" if api == "v1" else f"/apis/{api}"
    if namespace and plural not in CLUSTER_SCOPED:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    if name:
        base += f"/{name}"
    return base + (f"/{sub}" if sub else "")


def message_of(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("message"))
    except (ValueError, AttributeError):
        return raw.decode(errors="replace")[:300]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_kubelet(pod: dict[str, Any]) -> None:
    """Fill what a real Pod needs and what the kubelet would report: a spec, full container statuses."""
    status = pod.get("status") or {}
    names = [c.get("name", "main") for c in status.get("containerStatuses") or []] or ["main"]
    pod.setdefault("spec", {"containers": [{"name": n, "image": "registry.invalid/envtest:1"} for n in names]})
    for cs in status.get("containerStatuses") or []:
        cs.setdefault("image", "registry.invalid/envtest:1")
        cs.setdefault("imageID", "")
        cs.setdefault("ready", False)
        cs.setdefault("restartCount", 0)
        term = (cs.get("state") or {}).get("terminated")
        if term is not None:
            term.setdefault("startedAt", term.get("finishedAt"))
    if status.get("containerStatuses") and "phase" not in status:
        codes = [((c.get("state") or {}).get("terminated") or {}).get("exitCode") for c in status["containerStatuses"]]
        if all(code is not None for code in codes):
            status["phase"] = "Succeeded" if not any(codes) else "Failed"


def as_job_controller(status: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """A Job status the way the Job controller writes it (the API server enforces the sequence and keeps
    ``startTime`` once set)."""
    out = copy.deepcopy(status)
    if current.get("startTime"):
        out["startTime"] = current["startTime"]
    conditions = out.get("conditions") or []
    for c in conditions:
        c.setdefault("lastProbeTime", now())
        c.setdefault("lastTransitionTime", now())
    kinds = {c["type"] for c in conditions if c.get("status") == "True"}
    if kinds & {"Complete", "Failed"} or out.get("active"):
        out.setdefault("startTime", now())
    if "Complete" in kinds:
        out.setdefault("completionTime", now())
        if "SuccessCriteriaMet" not in kinds:
            conditions.insert(0, {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                                  "lastProbeTime": now(), "lastTransitionTime": now()})  # fmt: skip
    if "Failed" in kinds and "FailureTarget" not in kinds:
        failed = next(c for c in conditions if c["type"] == "Failed")
        target = {**failed, "type": "FailureTarget"}
        conditions.insert(0, target)
    if kinds & {"Complete", "Failed"}:
        out.setdefault("terminating", 0)
        out.setdefault("ready", 0)
        out.setdefault("uncountedTerminatedPods", {})
    if conditions:
        out["conditions"] = conditions
    return out


class RealKube:
    """Same surface as ``KubeEmulator`` for the suites; ``token`` is the identity the proxy presents."""

    def __init__(
        self,
        plane: ControlPlane,
        *,
        token: str,
        namespaces: tuple[str, ...],
        identities: dict[str, str] | None = None,
        garbage_collect: bool = True,
        **_: Any,
    ) -> None:
        self.plane = plane
        self.token = token
        self.identities = identities or {}
        self.namespaces = namespaces
        self.garbage_collect = garbage_collect
        self.requests: list[tuple[str, str]] = []
        self.denied: list[tuple[str, str, str]] = []  # 401/403 answers: (method, path, message)
        self.gone_next: set[str] = set()
        self.logs: dict[tuple[str, str, str], str] = {}  # what the kubelet would serve for pods/{pod}/log
        self.log_requests: list[str] = []
        self.url = ""
        self._baseline: set[str] = set()
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None
        self._streams: set[aiohttp.ClientResponse] = set()

    # --- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> str:
        for ns in self.namespaces:
            self.plane.ensure_namespace(ns)
        self._baseline = {o["metadata"]["uid"] for o in self._leftovers()}
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.plane.ssl))
        self.url = await self._serve(self.token)
        return self.url

    async def url_as(self, role: str) -> str:
        """A second proxy presenting another component's token (the controller beside the agent)."""
        return await self._serve(self.identities[role])

    async def _serve(self, token: str) -> str:
        async def forward(request: web.Request) -> web.StreamResponse:
            return await self._forward(request, token)

        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """End the proxies, clean up, and fail if any request of the component was refused (RBAC)."""
        for resp in list(self._streams):
            resp.close()
        for runner in self._runners:
            await runner.cleanup()
        if self._session is not None:
            await self._session.close()
        self.cleanup()
        assert not self.denied, f"the API server refused the component's own ServiceAccount: {self.denied}"

    def _leftovers(self) -> list[dict[str, Any]]:
        found = []
        for api, plurals in CLEANED.items():
            for plural in plurals:
                for ns in self.namespaces:
                    found += self.all(api, plural, ns)
        for api, plurals in CLEANED_CLUSTER.items():
            for plural in plurals:
                found += self.all(api, plural)
        return found

    def cleanup(self) -> None:
        """Delete what the test created (finalizers included) so the next test starts from the same state."""
        for obj in self._leftovers():
            meta = obj["metadata"]
            if meta["uid"] in self._baseline:
                continue
            api, plural = obj["apiVersion"], self._plural(obj)
            path = path_of(api, plural, meta.get("namespace"), meta["name"])
            with contextlib.suppress(ApiError):
                if meta.get("finalizers"):
                    patch = {"metadata": {"finalizers": None}}
                    self.plane.request("PATCH", path, patch, content_type="application/merge-patch+json")
                body = {"propagationPolicy": "Background", "gracePeriodSeconds": 0}
                self.plane.request("DELETE", path, body)
        # Deletion is asynchronous: wait until the objects are gone, so the next test (which often reuses
        # the same names) never meets a terminating leftover, e.g. the previous test's Job.
        deadline = time.monotonic() + 30
        while [o for o in self._leftovers() if o["metadata"]["uid"] not in self._baseline]:
            if time.monotonic() > deadline:
                break  # the next test's own assertions say what lingered
            time.sleep(0.05)

    @staticmethod
    def _plural(obj: dict[str, Any]) -> str:
        return str(obj["kind"]).lower() + "s"  # true of every kind these suites create

    # --- the proxy ----------------------------------------------------------------------------------------
    async def _forward(self, request: web.Request, token: str) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        assert self._session is not None
        watch = request.method == "GET" and request.query.get("watch") in ("true", "True", "1")
        plural = request.path.rstrip("/").rsplit("/", 1)[-1]
        if watch and plural in self.gone_next:
            self.gone_next.discard(plural)
            gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
                    "message": "too old resource version"}  # fmt: skip
            return web.Response(
                text=json.dumps({"type": "ERROR", "object": gone}) + "\n", content_type="application/json"
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        headers["Authorization"] = f"Bearer {token}"
        body = await request.read() if request.can_read_body else None
        try:
            upstream = await self._session.request(
                request.method, self.plane.url + request.path_qs, data=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=None if watch else 60),
            )  # fmt: skip
        except aiohttp.ClientError:
            return self._drop(request)  # the server is down: the component sees the connection fail
        if not watch:
            async with upstream:
                raw = await upstream.read()
                if upstream.status in (401, 403):
                    self.denied.append((request.method, request.path_qs, message_of(raw)))
                ctype = upstream.headers.get("Content-Type", "application/json")
                parts = request.path.strip("/").split("/")
                if len(parts) == 7 and parts[-1] == "log" and upstream.status in (200, 204, 400):
                    # Authorised, but no kubelet runs the Pod: answer as the kubelet would.
                    self.log_requests.append(request.path_qs)
                    q = request.query
                    text = log_text(self.logs, parts[3], parts[5], q.get("container", ""), q.get("tailLines"))
                    return web.Response(text=text, content_type="text/plain")
                return web.Response(body=raw, status=upstream.status, headers={"Content-Type": ctype})
        self._streams.add(upstream)
        resp = web.StreamResponse(status=upstream.status, headers={"Content-Type": "application/json"})
        try:
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
        except aiohttp.ClientError:
            return self._drop(request)  # the server went away mid-watch: so does the connection
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(upstream)
            upstream.close()
        return resp

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=502)

    # --- the emulator's direct state access, as the admin ---------------------------------------------------
    def get(self, api: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.plane.request("GET", path_of(api, plural, namespace, name))  # type: ignore[no-any-return]
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    def all(self, api: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        try:
            listed = self.plane.request("GET", path_of(api, plural, namespace))
        except ApiError as exc:
            if exc.code == 404:
                return []
            raise
        kind = listed["kind"].removesuffix("List")
        return [{"apiVersion": api, "kind": kind, **o} for o in listed["items"]]

    async def put_object(self, api: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = json.loads(json.dumps(obj))
        meta = obj.setdefault("metadata", {})
        ns, name = meta.get("namespace"), meta["name"]
        if plural == "pods":
            as_kubelet(obj)
        status = obj.pop("status", None) if plural != "events" else None
        for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
            meta.pop(key, None)
        current = self.get(api, plural, ns or "", name)
        if current is None:
            stored = self.plane.request("POST", path_of(api, plural, ns), obj)
        else:
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
            if plural == "pods":
                obj["spec"] = current["spec"]
            stored = self.plane.request("PUT", path_of(api, plural, ns, name), obj)
        if status is not None:
            stored["status"] = status
            stored = self.plane.request("PUT", path_of(api, plural, ns, name, "status"), stored)
        return stored  # type: ignore[no-any-return]

    async def set_status(self, api: str, plural: str, namespace: str, name: str, status_: dict[str, Any]) -> None:
        obj = self.get(api, plural, namespace, name)
        assert obj is not None, f"{plural} {namespace}/{name} does not exist"
        obj["status"] = as_job_controller(status_, obj.get("status") or {}) if plural == "jobs" else status_
        self.plane.request("PUT", path_of(api, plural, namespace, name, "status"), obj)

    async def remove(self, api: str, plural: str, namespace: str, name: str) -> None:
        # As kubectl and the TTL controller delete: the object goes now, dependents in the background (a Job's
        # own default would orphan its Pods and linger until the garbage collector clears the finalizer).
        body = {"propagationPolicy": "Background"}
        with contextlib.suppress(ApiError):
            self.plane.request("DELETE", path_of(api, plural, namespace, name), body)
