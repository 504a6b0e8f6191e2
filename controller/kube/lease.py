"""Leader election through a coordination.k8s.io/v1 Lease (optimistic concurrency on resourceVersion)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.kube.client import LEASES, ConflictError, Kube
from modelferry.errors import ModelferryError

log = logging.getLogger(__name__)


def micro_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def lease_decision(spec: dict[str, Any], identity: str, now: datetime, duration: float) -> tuple[bool, dict[str, Any]]:
    """Pure: may ``identity`` hold the Lease now, and the spec to write if so."""
    holder = spec.get("holderIdentity")
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    seconds = float(spec.get("leaseDurationSeconds") or duration)
    expired = renewed is None or now > renewed + timedelta(seconds=seconds)
    if holder and holder != identity and not expired:
        return False, spec
    new = dict(spec)
    if holder != identity:
        new["acquireTime"] = micro_time(now)
        new["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
    new["holderIdentity"] = identity
    new["leaseDurationSeconds"] = max(1, int(duration))
    new["renewTime"] = micro_time(now)
    return True, new


class LeaderElector:
    """Acquire and renew a Lease; ``is_leader`` is set while this replica holds it."""

    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, *, duration: float, renew: float) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.renew = renew
        self.is_leader = asyncio.Event()
        self.lost = asyncio.Event()

    async def try_acquire(self) -> bool:
        """One attempt to acquire or renew; True while we hold the Lease."""
        now = datetime.now(UTC)
        lease = await self.kube.get(LEASES, self.namespace, self.name)
        if lease is None:
            _, spec = lease_decision({}, self.identity, now, self.duration)
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": spec,
            }
            try:
                await self.kube.create(LEASES, self.namespace, body)
            except ConflictError:
                return False
            return True
        ok, spec = lease_decision(lease.get("spec") or {}, self.identity, now, self.duration)
        if not ok:
            return False
        lease["spec"] = spec
        try:
            await self.kube.replace(LEASES, self.namespace, self.name, lease)
        except ConflictError:
            return False  # someone else wrote it first; try again next round
        return True

    async def run(self) -> None:
        """Forever: try, renew; on losing a held Lease set ``lost`` (the process must stop acting)."""
        while True:
            try:
                held = await self.try_acquire()
            except ModelferryError as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                held = False
            if held and not self.is_leader.is_set():
                log.info("became leader (lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
                self.is_leader.set()
            elif not held and self.is_leader.is_set():
                log.error("lost the lease %s/%s; stopping", self.namespace, self.name)
                self.is_leader.clear()
                self.lost.set()
                return
            await asyncio.sleep(self.renew)

    async def release(self) -> None:
        """Give the Lease up on shutdown so another replica takes over at once."""
        if not self.is_leader.is_set():
            return
        try:
            lease = await self.kube.get(LEASES, self.namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                lease["spec"]["renewTime"] = None
                await self.kube.replace(LEASES, self.namespace, self.name, lease)
        except ModelferryError as exc:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, exc)
        self.is_leader.clear()
