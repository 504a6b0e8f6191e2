"""How many CPUs this process may use: its CPU affinity, capped by a container's CPU limit.

``os.cpu_count()`` and the affinity mask see every CPU of the node; a pod limited to two CPUs on a
64-core node still gets 64 from them. The limit is the cgroup's CPU quota (``cpu.max`` in cgroup
v2, ``cpu.cfs_quota_us`` in v1), rounded up to whole CPUs.
"""

from __future__ import annotations

import math
import os


def usable_cpus(cgroup: str = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (a container's CPU limit)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_quota(cgroup)
    return max(1, min(cpus, math.ceil(quota))) if quota is not None else cpus


def cgroup_quota(cgroup: str = "/sys/fs/cgroup") -> float | None:
    """CPUs' worth of time per period allowed by cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``; None: no limit."""
    try:
        with open(os.path.join(cgroup, "cpu.max")) as fh:
            quota, _, period = fh.read().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        pass
    try:
        with (
            open(os.path.join(cgroup, "cpu", "cpu.cfs_quota_us")) as q,
            open(os.path.join(cgroup, "cpu", "cpu.cfs_period_us")) as p,
        ):
            value, period_us = int(q.read()), int(p.read())
        return None if value <= 0 else value / period_us
    except (OSError, ValueError, ZeroDivisionError):
        return None
