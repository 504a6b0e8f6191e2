"""Leader election through a coordination.k8s.io/v1 Lease, with client-go's semantics.

- A candidate tries to acquire every ``retry_period`` (jittered). A Lease held by someone else counts as
  expired once ``leaseDurationSeconds`` have passed *on our clock* since we last saw its record change
  (client-go's observed time: clock skew between replicas does not matter).
- The leader renews every ``retry_period``. A failed renewal (API down, 5xx, conflict, timeout) is retried
  every ``retry_period`` until ``renew_deadline`` has passed since the last good renewal; only then is
  leadership given up. Seeing another identity hold an unexpired Lease ends it at once.
- After losing, the elector campaigns again; it never ends the process. Writes are optimistic
  (resourceVersion), so two candidates can never both win one round.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from typing import Any

from modelferry.controller.kube.client import LEASES, ConflictError, Kube
from modelferry.errors import ModelferryError

log = logging.getLogger(__name__)

JITTER = 1.2  # client-go's JitterFactor for acquire attempts


def micro_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def record_of(spec: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies one write of a Lease (a change restarts the observed-time clock)."""
    return (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("acquireTime"), spec.get("leaseTransitions"))


def held_by_other(spec: dict[str, Any], identity: str, observed_at: float, now: float, duration: float) -> bool:
    """Pure: whether someone else holds the Lease, judged by how long ago (our clock) its record last changed."""
    holder = spec.get("holderIdentity")
    if not holder or holder == identity:
        return False
    seconds = float(spec.get("leaseDurationSeconds") or duration)
    return now < observed_at + seconds


def next_spec(spec: dict[str, Any], identity: str, wall: datetime, duration: float) -> dict[str, Any]:
    """Pure: the Lease spec that makes ``identity`` the holder (renewal keeps acquireTime and transitions)."""
    new = dict(spec)
    holder = spec.get("holderIdentity")
    if holder != identity:
        new["acquireTime"] = micro_time(wall)
        new["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
    new["holderIdentity"] = identity
    new["leaseDurationSeconds"] = max(1, round(duration))
    new["renewTime"] = micro_time(wall)
    return new


class LeaderElector:
    """Acquire and renew a Lease; ``is_leader`` is set while this replica holds it, ``standby`` otherwise."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.is_leader = asyncio.Event()
        self.standby = asyncio.Event()
        self.standby.set()
        self.acquired = 0  # times leadership was gained
        self.lost = 0  # times leadership was given up
        self.failed_attempts = 0  # acquire/renew attempts that failed on an error
        self.renewals = 0  # renewals of a held Lease that went through
        self.failed_renewals = 0  # renewals of a held Lease that did not go through
        self.other_holder: str | None = None
        self._observed: tuple[tuple[Any, ...], float] | None = None

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _observe(self, spec: dict[str, Any]) -> float:
        record = record_of(spec)
        if self._observed is None or self._observed[0] != record:
            self._observed = (record, self._now())
        return self._observed[1]

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards. Raises on API errors."""
        wall = datetime.now(UTC)
        lease = await self.kube.get(LEASES, self.namespace, self.name)
        if lease is None:
            spec0 = next_spec({}, self.identity, wall, self.lease_duration)
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": spec0,
            }
            try:
                created = await self.kube.create(LEASES, self.namespace, body)
            except ConflictError:
                return False
            self._observe(created.get("spec") or spec0)
            self.other_holder = None
            return True
        spec = lease.get("spec") or {}
        observed_at = self._observe(spec)
        if held_by_other(spec, self.identity, observed_at, self._now(), self.lease_duration):
            self.other_holder = str(spec.get("holderIdentity"))
            return False
        self.other_holder = None
        lease["spec"] = next_spec(spec, self.identity, wall, self.lease_duration)
        try:
            updated = await self.kube.replace(LEASES, self.namespace, self.name, lease)
        except ConflictError:
            return False  # someone else wrote it first; the next round reads it again
        self._observe(updated.get("spec") or lease["spec"])
        return True

    async def _attempt(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(max(0.05, seconds)):
                return await self.try_acquire_or_renew()
        except (ModelferryError, TimeoutError) as exc:
            self.failed_attempts += 1
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc or "timed out")
            return False

    async def _acquire(self) -> None:
        while not await self._attempt(self.renew_deadline):
            if self.other_holder:
                log.debug("lease %s/%s is held by %s", self.namespace, self.name, self.other_holder)
            await asyncio.sleep(self.retry_period * (1 + JITTER * random.random()))  # noqa: S311

    async def _renew(self) -> None:
        """Renew every ``retry_period`` until a renewal misses ``renew_deadline`` or another holder shows up."""
        last_ok = self._now()
        while True:
            await asyncio.sleep(self.retry_period)
            deadline = last_ok + self.renew_deadline
            if await self._attempt(deadline - self._now()):
                last_ok = self._now()
                self.renewals += 1
                continue
            self.failed_renewals += 1
            if self.other_holder:
                log.error("lease %s/%s was taken by %s", self.namespace, self.name, self.other_holder)
                return
            if self._now() >= deadline:
                log.error("could not renew lease %s/%s within %.0fs", self.namespace, self.name, self.renew_deadline)
                return

    async def run(self) -> None:
        """Forever: campaign, lead while renewals succeed, step down, campaign again."""
        while True:
            await self._acquire()
            self.acquired += 1
            log.info("became leader (lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
            self.standby.clear()
            self.is_leader.set()
            await self._renew()  # a cancel (shutdown) leaves is_leader set so that release() gives the Lease up
            self.is_leader.clear()
            self.standby.set()
            self.lost += 1
            log.error("lost leadership of %s/%s: standing by and campaigning again", self.namespace, self.name)

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
        self.standby.set()
