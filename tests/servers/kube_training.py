"""The API emulator plus what the TrainingRun reconciler also reads: pod logs and API discovery."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.servers.kube import KubeEmulator, status

KUBEFLOW = {"kubeflow.org/v1": [("pytorchjobs", "PyTorchJob")]}
TRAINER_V2 = {"trainer.kubeflow.org/v1alpha1": [("trainjobs", "TrainJob"), ("trainingruntimes", "TrainingRuntime")]}


class TrainingKubeEmulator(KubeEmulator):
    """``logs[(namespace, pod, container)]`` answers ``pods/{pod}/log``; ``kubeflow`` serves PyTorchJobs,
    ``trainer`` serves Kubeflow Trainer v2 (TrainJob, TrainingRuntime) in API discovery."""

    def __init__(self, *, kubeflow: bool = False, trainer: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.served = {**(KUBEFLOW if kubeflow else {}), **(TRAINER_V2 if trainer else {})}
        self.logs: dict[tuple[str, str, str], str] = {}
        self.log_requests: list[str] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        group_version = "/".join(parts[1:])
        if request.method == "GET" and len(parts) == 3 and group_version in {*KUBEFLOW, *TRAINER_V2}:
            self.requests.append((request.method, request.path_qs))
            if group_version not in self.served:
                return status(404, "NotFound", "the server could not find the requested resource")
            resources = [{"name": n, "kind": k, "namespaced": True} for n, k in self.served[group_version]]
            return web.json_response({"kind": "APIResourceList", "groupVersion": group_version, "resources": resources})
        if request.method == "GET" and len(parts) == 7 and parts[:2] == ["api", "v1"] and parts[-1] == "log":
            self.requests.append((request.method, request.path_qs))
            ns, pod, container = parts[3], parts[5], request.query.get("container", "")
            self.log_requests.append(request.path_qs)
            if self.get("v1", "pods", ns, pod) is None:
                return status(404, "NotFound", f'pods "{pod}" not found')
            text = self.logs.get((ns, pod, container), "")
            tail = int(request.query.get("tailLines") or 0)
            if tail:
                text = "\n".join(text.splitlines()[-tail:])
            return web.Response(text=text, content_type="text/plain")
        return await super()._handle(request)
