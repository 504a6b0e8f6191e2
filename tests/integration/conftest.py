"""Kubernetes backends for the controller and agent suites: the emulator always, a real API server with envtest.

``kube_backend`` is parametrised ``emulator`` / ``apiserver``; the ``apiserver`` half needs
``KUBEBUILDER_ASSETS`` (see docs/testing.md) and skips with that one reason otherwise. One control plane
serves the whole session; each test gets its objects cleaned away by the backend.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers.envtest import ControlPlane, assets_or_reason
from tests.servers.kube import KubeEmulator
from tests.servers.kube_real import RealKube
from tests.servers.kube_training import TrainingKubeEmulator

ROOT = Path(__file__).resolve().parents[2]
INSTALL_NS = "modelferry"
AGENT_NODE = "node-1"  # the node the agent suites' agent runs on
BACKENDS = ("emulator", "apiserver")
_outcomes: Counter[tuple[str, str]] = Counter()


@dataclass
class Cluster:
    """A running control plane with the dev overlay applied and the components' own tokens."""

    plane: ControlPlane
    controller_token: str
    agent_token: str
    overlay: list[dict[str, Any]]

    prepared: set[str] = field(default_factory=set)

    def prepare(self, namespace: str) -> None:
        """The namespace, and the Roles the controller has in its own namespace, once per session."""
        if namespace in self.prepared:
            return
        self.plane.ensure_namespace(namespace)
        apply(self.plane, controller_roles_in(self.overlay, namespace))
        self.prepared.add(namespace)

    def token(self, role: str) -> str:
        return {"controller": self.controller_token, "agent": self.agent_token, "admin": self.plane.admin_token}[role]


def render(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def apply(plane: ControlPlane, objects: list[dict[str, Any]]) -> None:
    listed = {"apiVersion": "v1", "kind": "List", "items": objects}
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=json.dumps(listed))


def install(plane: ControlPlane, objects: list[dict[str, Any]]) -> None:
    apply(plane, objects)
    plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


def controller_roles_in(objects: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """The overlay's namespaced Roles of the controller (leader election, the agent DaemonSets) and their
    bindings, for a controller whose own namespace is ``namespace`` (the suites use ``demo``)."""
    out = []
    for obj in objects:
        if obj["kind"] in ("Role", "RoleBinding") and obj["metadata"]["name"].startswith("modelferry-controller"):
            copy = json.loads(json.dumps(obj))
            copy["metadata"]["namespace"] = namespace
            out.append(copy)
    return out


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    assets, reason = assets_or_reason()
    if assets is None:
        pytest.skip(reason)
    plane = ControlPlane(assets, tmp_path_factory.mktemp("envtest"))
    plane.start()
    try:
        overlay = render(ROOT / "kustomize" / "overlays" / "dev")
        install(plane, overlay)
        plane.start_controller_manager()
        agent_pod = plane.pod_on_node(INSTALL_NS, "modelferry-agent-envtest", "modelferry-agent", AGENT_NODE)
        plane.ensure_namespace(INSTALL_NS)
        yield Cluster(
            plane,
            plane.service_account_token(INSTALL_NS, "modelferry-controller"),
            # As on a node: the agent's token is bound to its pod, so it names the node (the node-label policy).
            plane.service_account_token(INSTALL_NS, "modelferry-agent", pod=agent_pod),
            overlay,
        )
    finally:
        plane.stop()


@pytest.fixture(params=BACKENDS)
def kube_backend(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``make(role=..., namespaces=..., **emulator_kw)``: a fresh backend (not started) of this parameter.

    ``role`` picks the ServiceAccount the components run as on the real server; the test's namespaces
    get the leader-election RBAC the controller has in its own namespace.
    """
    if request.param == "emulator":
        return lambda role="controller", namespaces=(), training=False, **kw: (
            TrainingKubeEmulator(**kw) if training else KubeEmulator(**kw)
        )
    marker = request.node.get_closest_marker("emulator_only")
    if marker is not None:
        pytest.skip(f"emulator only: {marker.args[0]}")
    cl: Cluster = request.getfixturevalue("cluster")

    def make(
        role: str = "controller", namespaces: tuple[str, ...] = ("demo", INSTALL_NS), training: bool = False, **kw: Any
    ) -> RealKube:
        for ns in namespaces:
            cl.prepare(ns)
        identities = {r: cl.token(r) for r in ("controller", "agent", "admin")}
        return RealKube(cl.plane, token=cl.token(role), namespaces=namespaces, identities=identities, **kw)

    return make


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    for backend in BACKENDS:
        if f"[{backend}" in report.nodeid or f"-{backend}]" in report.nodeid or f"-{backend}-" in report.nodeid:
            _outcomes[(backend, report.outcome)] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _outcomes:
        line = ", ".join(f"{b} {o}: {n}" for (b, o), n in sorted(_outcomes.items()))
        terminalreporter.write_line(f"kube backends: {line}")
    _, reason = assets_or_reason()
    if reason and _outcomes[("apiserver", "skipped")]:
        terminalreporter.write_line(f"real API server tier skipped: {reason}")
