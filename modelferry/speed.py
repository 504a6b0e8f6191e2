"""The low-speed limit (curl's ``--speed-limit``/``--speed-time``) for a whole sync.

A server that sends one byte a second never trips the stall timeout and would keep a sync alive
for days. The guard counts the bytes every part of the run receives, in small time slots. A part
that has been running for at least ``seconds`` fails with :class:`TooSlowError` (retryable) when
all parts together moved fewer than ``limit * seconds`` bytes in the last ``seconds``. Measuring
the whole run, not each connection, keeps 64 connections sharing a slow but honest link alive,
while a lone trickling stream (the last part of a run, or every part of a hostile server) fails.
Checks happen as bytes arrive; every reader returns what it has within the stall timeout.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from modelferry.errors import TooSlowError

SLOTS = 16  # time slots per window


class LowSpeedGuard:
    """Shared by every part of one run; thread-safe."""

    def __init__(self, limit: int, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.seconds = seconds
        self.clock = clock
        self._slot = seconds / SLOTS
        self._moved: collections.deque[list[int]] = collections.deque()  # [slot number, bytes]
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        """``count`` bytes arrived."""
        slot = int(self.clock() / self._slot)
        with self._lock:
            if self._moved and self._moved[-1][0] == slot:
                self._moved[-1][1] += count
            else:
                self._moved.append([slot, count])
            while self._moved and self._moved[0][0] < slot - SLOTS:
                self._moved.popleft()

    def check(self, started: float, what: str) -> None:
        """Raise :class:`TooSlowError` if the part started at ``started`` has waited out a too slow window."""
        if self.limit <= 0:
            return
        now = self.clock()
        if now - started < self.seconds:
            return
        first = int((now - self.seconds) / self._slot) + 1
        with self._lock:
            moved = sum(count for slot, count in self._moved if slot >= first)
        if moved < self.limit * self.seconds:
            raise TooSlowError(
                f"{what}: the transfer is too slow: {moved} bytes in the last {self.seconds:g} s, under the "
                f"low-speed limit of {self.limit} bytes/s",
                obj=what,
                hint="The source is too slow or stuck. Fix the network or the server, or relax the limit: "
                "--speed-limit/--speed-time (MODELFERRY_TRANSFER__SPEED_LIMIT, __SPEED_TIME; 0 switches it off)",
            )
