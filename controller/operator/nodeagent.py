"""The NodeAgent reconciler: NodeAgent -> ``render_daemonset`` -> the agent's DaemonSet -> NodeAgent status.

The decisions are the pure functions of :mod:`modelferry.controller.agent.daemonset`; this adapter reads its caches,
creates or replaces the DaemonSet (owned by the NodeAgent, so deleting the NodeAgent removes it) in the
agent namespace, and writes the NodeAgent's status. The operator routes queue keys ``("NodeAgent", "", name)``
to :meth:`NodeAgentReconciler.reconcile`.
"""

from __future__ import annotations

import logging
from typing import Any

from modelferry.controller.agent.daemonset import (
    KIND,
    Problem,
    agent_status,
    daemonset_name,
    inputs_hash,
    render_daemonset,
)
from modelferry.controller.kube.client import DAEMONSETS, NODEAGENTS, ConflictError
from modelferry.controller.kube.events import now_iso
from modelferry.controller.kube.ownership import (
    LABEL_MANAGED_BY,
    LABEL_OWNER_KIND,
    LABEL_OWNER_NAME,
    MANAGED_BY,
    owned_by,
)
from modelferry.controller.kube.watch import Informer, object_key
from modelferry.controller.reconcile.parts import Parts

log = logging.getLogger(__name__)


class NodeAgentReconciler:
    """Level-triggered reconcile of NodeAgents (cluster-scoped) into DaemonSets in the agent namespace."""

    kind = KIND

    def __init__(self, op: Parts) -> None:
        self.op = op
        self.kube = op.kube
        self.namespace = op.settings.agent_namespace
        self.image = op.settings.node_agent.image or op.settings.job.image
        timeout = op.settings.watch_timeout_seconds
        self.agents = Informer(self.kube, NODEAGENTS, self._on_agent, timeout_seconds=timeout)
        self.daemonsets = Informer(
            self.kube,
            DAEMONSETS,
            self._on_daemonset,
            namespace=self.namespace,
            label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_OWNER_KIND}={KIND}",
            timeout_seconds=timeout,
        )
        op.informers += [self.agents, self.daemonsets]

    def _on_agent(self, kind: str, obj: dict[str, Any]) -> None:
        self.op.queue.add((KIND, "", object_key(obj)[1]))

    def _on_daemonset(self, kind: str, obj: dict[str, Any]) -> None:
        owner = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_OWNER_NAME)
        if owner:
            self.op.queue.add((KIND, "", owner))

    def resync(self) -> None:
        """Queue every NodeAgent."""
        for agent in self.agents.items():
            self.op.queue.add((KIND, "", object_key(agent)[1]))

    async def reconcile(self, namespace: str, name: str) -> None:
        """Bring one NodeAgent's DaemonSet and status in line with its spec."""
        agent = self.agents.get("", name)
        if agent is None or (agent.get("metadata") or {}).get("deletionTimestamp"):
            return  # garbage collection removes the DaemonSet through its owner reference
        desired = render_daemonset(agent, namespace=self.namespace, default_image=self.image)
        live = await self.kube.get(DAEMONSETS, self.namespace, daemonset_name(name))
        problem: Problem | None = None
        if isinstance(desired, Problem):
            problem = desired
        elif live is not None and not owned_by(live, KIND, name):
            problem = Problem(
                "DaemonSetNotManaged",
                f"DaemonSet {self.namespace}/{daemonset_name(name)} exists and was not created for this NodeAgent "
                "(the plain manifests' agent?); delete it, or delete this NodeAgent and keep the plain one",
            )
        elif live is None:
            live = await self._create(name, desired)
        elif inputs_hash(live) != inputs_hash(desired):
            live = await self._replace(name, live, desired)
        if problem is not None:
            log.warning("NodeAgent %s: %s: %s", name, problem.reason, problem.message)
        await self._write_status(agent, agent_status(agent, live, problem, self.namespace, now_iso()))

    async def _create(self, name: str, desired: dict[str, Any]) -> dict[str, Any] | None:
        try:
            created = await self.kube.create(DAEMONSETS, self.namespace, desired)
        except ConflictError:
            self.op.queue.add((KIND, "", name), 1.0)  # created meanwhile (another writer): look again
            return None
        log.info("NodeAgent %s: created DaemonSet %s/%s", name, self.namespace, desired["metadata"]["name"])
        return created

    async def _replace(self, name: str, live: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
        body = {**desired, "metadata": {**desired["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]}}
        try:
            replaced = await self.kube.replace(DAEMONSETS, self.namespace, desired["metadata"]["name"], body)
        except ConflictError:
            self.op.queue.add((KIND, "", name), 1.0)  # changed since it was read: read it again
            return live
        log.info("NodeAgent %s changed: updated DaemonSet %s/%s", name, self.namespace, desired["metadata"]["name"])
        return replaced

    async def _write_status(self, agent: dict[str, Any], status: dict[str, Any]) -> None:
        current = agent.get("status") or {}
        if all(current.get(k) == v for k, v in status.items()):
            return
        name = object_key(agent)[1]
        updated = await self.kube.patch(NODEAGENTS, None, name, {"status": status}, sub="status")
        if updated.get("metadata"):
            updated.setdefault("apiVersion", agent.get("apiVersion"))
            updated.setdefault("kind", KIND)
            self.agents.remember(("", name), updated)  # a reconcile queued before the watch event sees it
