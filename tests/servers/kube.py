"""A small Kubernetes API emulator over real HTTP for kubernetes-asyncio (closes kmock 0.8's gaps).

Generic over resources: core (``/api/v1``) and grouped (``/apis/{group}/{version}``), namespaced or
not. It implements GET/list (label and field selectors), watch (``watch=true|True|1``, from a
``resourceVersion``, ``timeoutSeconds``, 410 injection), POST (201, server-filled metadata, 409
AlreadyExists), PUT (409 on a stale resourceVersion), PATCH (merge, strategic treated as merge,
JSON patch), DELETE (optional ownerReference garbage collection), and the ``/status`` subresource.
There are no controllers: tests set Job and Pod status themselves.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

KINDS = {
    "secrets": "Secret",
    "configmaps": "ConfigMap",
    "pods": "Pod",
    "events": "Event",
    "namespaces": "Namespace",
    "jobs": "Job",
    "leases": "Lease",
    "modelsyncs": "ModelSync",
    "trainingruns": "TrainingRun",
    "basemodels": "BaseModel",
    "clusterbasemodels": "ClusterBaseModel",
    "nodes": "Node",
    "deployments": "Deployment",
    "services": "Service",
    "modelservers": "ModelServer",
    "daemonsets": "DaemonSet",
    "nodeagents": "NodeAgent",
}
WITH_GENERATION = {
    "jobs",
    "modelsyncs",
    "trainingruns",
    "basemodels",
    "clusterbasemodels",
    "deployments",
    "modelservers",
    "daemonsets",
    "nodeagents",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 add/replace/remove (enough for controllers)."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                else:
                    parent.insert(int(last), op["value"]) if op["op"] == "add" else parent.__setitem__(
                        int(last), op["value"]
                    )
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
    return doc


def selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Equality-based label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }
    return web.json_response(body, status=code)


class KubeEmulator:
    """State plus an aiohttp app; ``await start()`` gives ``url``."""

    def __init__(self, *, garbage_collect: bool = True) -> None:
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self.history: list[tuple[int, tuple[str, str], str, dict[str, Any]]] = []
        self.rv = 100
        self.garbage_collect = garbage_collect
        self.gone_next: set[str] = set()  # plurals whose next watch answers 410 Gone
        self.requests: list[tuple[str, str]] = []
        self.invalid: dict[str, str] = {}  # plural -> message: creates and replaces answer 422 Invalid (admission)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- direct state access for tests ---------------------------------------------------------------
    def _bucket(self, api: str, plural: str) -> dict[tuple[str, str], dict[str, Any]]:
        return self.objects.setdefault((api, plural), {})

    def all(self, api: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [o for (ns, _), o in self._bucket(api, plural).items() if namespace in (None, ns)]

    def get(self, api: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._bucket(api, plural).get((namespace, name))

    async def put_object(self, api: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object as a client would (fills metadata, emits a watch event)."""
        meta = obj.setdefault("metadata", {})
        key = (meta.get("namespace") or "", meta["name"])
        old = self._bucket(api, plural).get(key)
        return await self._store(api, plural, key, obj, "MODIFIED" if old else "ADDED", old)

    async def set_status(self, api: str, plural: str, namespace: str, name: str, status_: dict[str, Any]) -> None:
        obj = copy.deepcopy(self.get(api, plural, namespace, name))
        assert obj is not None, f"{plural} {namespace}/{name} does not exist"
        obj["status"] = status_
        await self._store(api, plural, (namespace, name), obj, "MODIFIED", obj)

    async def remove(self, api: str, plural: str, namespace: str, name: str) -> None:
        await self._delete(api, plural, (namespace, name))

    # --- internals -----------------------------------------------------------------------------------
    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    async def _store(
        self, api: str, plural: str, key: tuple[str, str], obj: dict[str, Any], kind: str, old: dict[str, Any] | None
    ) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = key[0] or None
        if not meta["namespace"]:
            meta.pop("namespace")
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if plural in WITH_GENERATION:
                meta["generation"] = 1
        else:
            om = old.get("metadata") or {}
            meta["uid"] = om.get("uid")
            meta["creationTimestamp"] = om.get("creationTimestamp")
            if plural in WITH_GENERATION:
                spec_changed = obj.get("spec") != old.get("spec")
                meta["generation"] = int(om.get("generation") or 1) + (1 if spec_changed else 0)
        if "stringData" in obj:  # what the API server does for Secrets
            data = obj.setdefault("data", {})
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(str(v).encode()).decode()
        if plural in KINDS:
            obj.setdefault("kind", KINDS[plural])
        obj.setdefault("apiVersion", api)
        meta["resourceVersion"] = self._next_rv()
        self._bucket(api, plural)[key] = obj
        await self._notify(api, plural, kind, obj)
        return obj

    async def _notify(self, api: str, plural: str, kind: str, obj: dict[str, Any]) -> None:
        self.history.append((self.rv, (api, plural), kind, copy.deepcopy(obj)))
        async with self._changed:
            self._changed.notify_all()

    async def _delete(self, api: str, plural: str, key: tuple[str, str]) -> dict[str, Any] | None:
        obj = self._bucket(api, plural).pop(key, None)
        if obj is None:
            return None
        obj["metadata"]["resourceVersion"] = self._next_rv()
        await self._notify(api, plural, "DELETED", obj)
        if self.garbage_collect:
            uid = obj["metadata"].get("uid")
            for (o_api, o_plural), bucket in list(self.objects.items()):
                for o_key, other in list(bucket.items()):
                    refs = (other.get("metadata") or {}).get("ownerReferences") or []
                    if any(r.get("uid") == uid for r in refs):
                        await self._delete(o_api, o_plural, o_key)
        return obj

    @staticmethod
    def _route(path: str) -> tuple[str, str, str | None, str | None, str | None] | None:
        """(api, plural, namespace, name, subresource) from a request path."""
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            api, rest = "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            api, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return None
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if not rest:
            return None
        return api, rest[0], ns, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None

    def _matching(self, api: str, plural: str, ns: str | None, query: Any) -> Iterator[dict[str, Any]]:
        fields = dict(t.split("=", 1) for t in (query.get("fieldSelector") or "").split(",") if "=" in t)
        for (o_ns, name), obj in sorted(self._bucket(api, plural).items()):
            if ns is not None and o_ns != ns:
                continue
            if not selector_matches(query.get("labelSelector"), (obj["metadata"].get("labels") or {})):
                continue
            if "metadata.name" in fields and fields["metadata.name"] != name:
                continue
            yield obj

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = self._route(request.path)
        self.requests.append((request.method, request.path_qs))
        if route is None:
            return status(404, "NotFound", f"no route {request.path}")
        api, plural, ns, name, sub = route
        q = request.query
        if request.method == "GET" and name is None:
            if q.get("watch") in ("true", "True", "1"):
                return await self._watch(request, api, plural, ns)
            items = list(self._matching(api, plural, ns, q))
            kind = KINDS.get(plural, plural) + "List"
            return web.json_response(
                {"kind": kind, "apiVersion": api, "metadata": {"resourceVersion": str(self.rv)}, "items": items}
            )
        key = (ns or "", name or "")
        current = self._bucket(api, plural).get(key)
        if request.method == "GET":
            return web.json_response(current) if current else status(404, "NotFound", f'{plural} "{name}" not found')
        if request.method == "DELETE":
            gone = await self._delete(api, plural, key)
            return web.json_response(gone) if gone else status(404, "NotFound", f'{plural} "{name}" not found')
        body: Any = await request.json() if request.can_read_body else {}
        if request.method in ("POST", "PUT") and plural in self.invalid and sub is None:
            return status(422, "Invalid", self.invalid[plural])
        if request.method == "POST":
            meta = body.setdefault("metadata", {})
            if meta.get("generateName") and not meta.get("name"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            key = (ns or "", meta.get("name", ""))
            if key in self._bucket(api, plural):
                return status(409, "AlreadyExists", f'{plural} "{key[1]}" already exists')
            body.pop("status", None) if plural != "events" else None
            return web.json_response(await self._store(api, plural, key, body, "ADDED", None), status=201)
        if current is None:
            return status(404, "NotFound", f'{plural} "{name}" not found')
        if request.method == "PUT":
            sent_rv = (body.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                return status(409, "Conflict", f'the object has been modified; {plural} "{name}"')
            new = copy.deepcopy(current)
            if sub == "status":
                new["status"] = body.get("status")
            else:
                keep = current.get("status")
                new = body
                if keep is not None:
                    new["status"] = keep
            return web.json_response(await self._store(api, plural, key, new, "MODIFIED", current))
        if request.method == "PATCH":
            ctype = request.content_type
            patched = (
                json_patch(current, body) if ctype == "application/json-patch+json" else merge_patch(current, body)
            )
            if sub == "status":
                new = copy.deepcopy(current)
                new["status"] = patched.get("status")
            else:
                new = patched
                new["status"] = current.get("status")
                if new["status"] is None:
                    new.pop("status")
            return web.json_response(await self._store(api, plural, key, new, "MODIFIED", current))
        return status(405, "MethodNotAllowed", request.method)

    async def _watch(self, request: web.Request, api: str, plural: str, ns: str | None) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        if plural in self.gone_next:
            self.gone_next.discard(plural)
            gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
                    "message": "too old resource version"}  # fmt: skip
            await resp.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            return resp
        since = int(request.query.get("resourceVersion") or self.rv)
        timeout = float(request.query.get("timeoutSeconds") or 30)
        selector = request.query.get("labelSelector")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sent = since
        try:
            while loop.time() < deadline:
                for rv, res, kind, obj in self.history:
                    if rv <= sent or res != (api, plural):
                        continue
                    sent = rv
                    if ns is not None and obj["metadata"].get("namespace") != ns:
                        continue
                    if not selector_matches(selector, obj["metadata"].get("labels") or {}):
                        continue
                    await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                async with self._changed:
                    try:
                        await asyncio.wait_for(self._changed.wait(), timeout=max(0.01, deadline - loop.time()))
                    except TimeoutError:
                        break
        except (ConnectionResetError, asyncio.CancelledError):
            return resp
        return resp


class ThreadedKubeEmulator:
    """The emulator on its own event loop in a thread, for synchronous tests (CLI commands)."""

    def __init__(self, **kw: Any) -> None:
        import threading

        self.emu = KubeEmulator(**kw)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> KubeEmulator:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.emu.start(), self.loop).result(10)
        return self.emu

    def call(self, coro: Any) -> Any:
        """Run a coroutine of the emulator (``put_object``...) on its loop."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _shutdown(self) -> None:
        await self.emu.stop()
        # Watches still streaming to a client that went away: end them before the loop stops.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
