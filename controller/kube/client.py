"""A dict-in, dict-out Kubernetes client over kubernetes-asyncio's ApiClient.

Objects stay plain dicts (what the pure decision functions take). API errors become the
modelferry error hierarchy at this boundary: 404 -> :class:`NotFoundError`, 409 -> :class:`ConflictError`,
410 -> :class:`GoneError`, 401/403 -> :class:`AccessDeniedError`, everything else retryable.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from modelferry.errors import AccessDeniedError, NotFoundError, RetryableError, UsageError
from modelferry.tls import TLSConfig, is_tls_failure, resolve_tls

log = logging.getLogger(__name__)


class ConflictError(RetryableError):
    """409: the object exists already or changed since it was read (re-read and retry)."""

    reason = "Conflict"


class GoneError(RetryableError):
    """410: the watch's resourceVersion is too old (relist)."""

    reason = "Gone"


@dataclass(frozen=True)
class Resource:
    """One API resource: ``group`` is empty for the core API."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


SECRETS = Resource("", "v1", "secrets", "Secret")
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")
JOBS = Resource("batch", "v1", "jobs", "Job")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
MODELSYNCS = Resource("modelferry.io", "v1alpha1", "modelsyncs", "ModelSync")
SERVICES = Resource("", "v1", "services", "Service")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
DAEMONSETS = Resource("apps", "v1", "daemonsets", "DaemonSet")
BASEMODELS = Resource("modelferry.io", "v1alpha1", "basemodels", "BaseModel")
CLUSTERBASEMODELS = Resource("modelferry.io", "v1alpha1", "clusterbasemodels", "ClusterBaseModel", namespaced=False)
TRAININGRUNS = Resource("modelferry.io", "v1alpha1", "trainingruns", "TrainingRun")
MODELSERVERS = Resource("modelferry.io", "v1alpha1", "modelservers", "ModelServer")
NODEAGENTS = Resource("modelferry.io", "v1alpha1", "nodeagents", "NodeAgent", namespaced=False)


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (None when absent or an HTTP date we do not parse)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _raise_for(status: int, text: str, what: str, retry_after: float | None = None) -> None:
    try:
        message = json.loads(text).get("message") or text
    except ValueError:
        message = text
    message = f"{what}: {message}"[:500]
    if status == 404:
        raise NotFoundError(message, obj=what)
    if status == 409:
        raise ConflictError(message, obj=what)
    if status == 410:
        raise GoneError(message, obj=what)
    if status in (401, 403):
        raise AccessDeniedError(message, obj=what, hint="Check the controller's ServiceAccount and RBAC")
    if status in (400, 422):
        raise UsageError(message, obj=what)
    raise RetryableError(f"{message} (HTTP {status})", obj=what, retry_after=retry_after)


# What can go wrong while a response is being read: a cut connection, a truncated chunked body, a stalled
# socket, a half-written JSON line. All of them are retryable: the caller reconnects.
STREAM_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, asyncio.IncompleteReadError, ValueError)


async def build_api_client(
    *, kubeconfig: str | None = None, api_url: str | None = None, tls: TLSConfig | None = None
) -> k8s.ApiClient:
    """An ApiClient: an explicit URL (tests, kubectl proxy), then in-cluster config, then a kubeconfig.

    An explicit HTTPS URL is trusted through the process's TLS setting (``tls``, else ``--ca-bundle`` /
    the usual variables); in-cluster and kubeconfig access keep the CA their configuration names.
    """
    configuration = k8s.Configuration()
    if api_url:
        configuration.host = api_url.rstrip("/")
        if api_url.startswith("https:"):
            tls = tls or resolve_tls()
            configuration.verify_ssl = tls.verify
            configuration.ssl_ca_cert = tls.cafile
    elif kubeconfig:
        await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException:
            try:
                await k8s_config.load_kube_config(client_configuration=configuration)
            except (k8s_config.ConfigException, OSError) as exc:
                raise UsageError(
                    "no Kubernetes configuration found",
                    hint="Run inside a cluster, set KUBECONFIG, or pass --kubeconfig",
                ) from exc
    return k8s.ApiClient(configuration)


def _selectors(label_selector: str | None, field_selector: str | None) -> list[tuple[str, str]]:
    query = [("labelSelector", label_selector)] if label_selector else []
    if field_selector:
        query.append(("fieldSelector", field_selector))
    return query


class Kube:
    """Generic CRUD, list and watch on plain dicts."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api

    async def close(self) -> None:
        await self.api.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        request_timeout: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        try:
            return await self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=request_timeout,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if is_tls_failure(exc):
                cfg = self.api.configuration
                trust = TLSConfig(
                    verify=cfg.verify_ssl, ca=cfg.ssl_ca_cert, origin="the Kubernetes client configuration"
                )
                raise trust.failure(f"the Kubernetes API at {cfg.host}", exc, what=path) from exc
            raise RetryableError(f"Kubernetes API unreachable: {exc}", obj=path) from exc

    async def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        resp = await self._call(method, path, **kw)
        async with resp:
            try:
                text = await resp.text()
                if not 200 <= resp.status <= 299:
                    _raise_for(
                        resp.status, text, f"{method} {path}", retry_after_seconds(resp.headers.get("Retry-After"))
                    )
                data: dict[str, Any] = json.loads(text) if text else {}
            except STREAM_ERRORS as exc:
                raise RetryableError(f"reading the answer to {method} {path} failed: {exc!r}", obj=path) from exc
            return data

    async def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self._json("GET", res.path(namespace, name))
        except NotFoundError:
            return None

    async def served(self, res: Resource) -> bool:
        """Whether the API server serves ``res`` (API discovery; False when its group/version is unknown)."""
        try:
            data = await self._json("GET", f"/apis/{res.group}/{res.version}" if res.group else "/api/v1")
        except NotFoundError:
            return False
        return any(r.get("name") == res.plural for r in data.get("resources") or [])

    async def pod_log(self, namespace: str, pod: str, container: str, *, tail_lines: int) -> str:
        """The last ``tail_lines`` lines of a container's log ('' when the pod or its log is gone)."""
        query = [("container", container), ("tailLines", str(tail_lines))]
        resp = await self._call("GET", PODS.path(namespace, pod, "log"), query=query)
        async with resp:
            try:
                text: str = await resp.text()
            except STREAM_ERRORS as exc:
                raise RetryableError(f"reading the log of pod {pod} failed: {exc!r}", obj=pod) from exc
            if resp.status in (400, 404):  # not started yet, or already removed
                return ""
            if not 200 <= resp.status <= 299:
                _raise_for(resp.status, text, f"GET pods/{pod}/log")
            return text

    async def list_pages(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 0,
    ) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        """Pages of ``(items, resourceVersion)`` (``limit`` 0: one page); items get apiVersion and kind."""
        query = _selectors(label_selector, field_selector)
        if limit:
            query.append(("limit", str(limit)))
        token = ""
        while True:
            data = await self._json("GET", res.path(namespace), query=query + ([("continue", token)] if token else []))
            items = []
            for item in data.get("items") or []:
                item.setdefault("apiVersion", res.api_version)
                item.setdefault("kind", res.kind)
                items.append(item)
            meta = data.get("metadata") or {}
            yield items, str(meta.get("resourceVersion") or "")
            token = str(meta.get("continue") or "")
            if not limit or not token:
                return

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """Items (with apiVersion and kind filled in) and the list's resourceVersion."""
        async for items, rv in self.list_pages(
            res, namespace, label_selector=label_selector, field_selector=field_selector
        ):
            return items, rv
        return [], ""

    async def watch(
        self,
        res: Resource,
        namespace: str | None,
        resource_version: str,
        *,
        timeout_seconds: int,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Events ``(type, object)`` until the server ends the watch.

        Raises :class:`GoneError` on 410 (relist) and :class:`RetryableError` for anything that breaks the
        stream (a cut connection, a truncated body, a stall, 5xx, 429 with its ``Retry-After``).
        """
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
            ("resourceVersion", resource_version),
            *_selectors(label_selector, field_selector),
        ]
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout_seconds + 30)
        what = f"watch {res.plural}"
        resp = await self._call("GET", res.path(namespace), query=query, request_timeout=timeout)
        async with resp:
            if not 200 <= resp.status <= 299:
                retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
                try:
                    text = await resp.text()
                except STREAM_ERRORS:
                    text = ""
                _raise_for(resp.status, text, what, retry_after)
            stream = resp.content.__aiter__()
            while True:
                try:
                    line = await stream.__anext__()
                    event = json.loads(line) if line.strip() else None
                except StopAsyncIteration:
                    return
                except STREAM_ERRORS as exc:
                    raise RetryableError(f"{what}: the stream broke: {exc!r}", obj=res.path(namespace)) from exc
                if event is None:
                    continue
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    _raise_for(int(obj.get("code") or 500), json.dumps(obj), what)
                obj.setdefault("apiVersion", res.api_version)
                obj.setdefault("kind", res.kind)
                yield str(event.get("type")), obj

    async def create(self, res: Resource, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("POST", res.path(namespace), body=body)

    async def replace(self, res: Resource, namespace: str | None, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("PUT", res.path(namespace, name), body=body)

    async def patch(
        self, res: Resource, namespace: str | None, name: str, body: dict[str, Any], *, sub: str | None = None
    ) -> dict[str, Any]:
        """JSON merge patch (``sub='status'`` for the status subresource)."""
        path = res.path(namespace, name, sub)
        return await self._json("PATCH", path, body=body, content_type="application/merge-patch+json")

    async def delete(self, res: Resource, namespace: str | None, name: str) -> bool:
        """Delete with background propagation (pods go with their Job). False when it was already gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            await self._json("DELETE", res.path(namespace, name), body=body)
        except NotFoundError:
            return False
        return True
