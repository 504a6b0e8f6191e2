"""A work queue of object keys: de-duplicated, one reconcile per key at a time, delays with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Hashable


class WorkQueue:
    """Keys wait until due; a key being processed is never handed out twice (it is re-queued after)."""

    def __init__(self, *, backoff_base: float = 1.0, backoff_max: float = 300.0) -> None:
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._due: dict[Hashable, float] = {}  # the authority; the heap may hold stale entries (skipped)
        self._heap: list[tuple[float, int, Hashable]] = []
        self._order = itertools.count()
        self._processing: set[Hashable] = set()
        self._dirty: dict[Hashable, float] = {}
        self._failures: dict[Hashable, int] = {}
        self._wakeup = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._due) + len(self._dirty)

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        """Queue ``key`` to run after ``delay`` seconds (an earlier due time wins)."""
        due = time.monotonic() + delay
        if key in self._processing:
            self._dirty[key] = min(due, self._dirty.get(key, due))
            return
        self._schedule(key, due)

    def _schedule(self, key: Hashable, due: float) -> None:
        current = self._due.get(key)
        if current is not None and current <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._order), key))
        self._wakeup.set()

    def retry(self, key: Hashable) -> float:
        """Queue ``key`` again after an exponential backoff; returns the delay."""
        count = self._failures.get(key, 0)
        self._failures[key] = count + 1
        delay = float(min(self.backoff_base * (2**count), self.backoff_max))
        self.add(key, delay)
        return delay

    def forget(self, key: Hashable) -> None:
        """A reconcile succeeded: reset the key's backoff."""
        self._failures.pop(key, None)

    async def get(self) -> Hashable:
        """The next due key (marked processing until :meth:`done`); O(log n) per key."""
        while True:
            if self.closed:
                raise asyncio.CancelledError
            now = time.monotonic()
            while self._heap:
                due, _, key = self._heap[0]
                if self._due.get(key) != due:  # superseded by an earlier due time, or handed out
                    heapq.heappop(self._heap)
                    continue
                if due > now:
                    break
                heapq.heappop(self._heap)
                del self._due[key]
                self._processing.add(key)
                self.idle.clear()
                return key
            wait = self._heap[0][0] - now if self._heap else None
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)

    def done(self, key: Hashable) -> None:
        """Processing of ``key`` ended; a change seen meanwhile queues it again."""
        self._processing.discard(key)
        if not self._processing:
            self.idle.set()
        if key in self._dirty:
            self._schedule(key, self._dirty.pop(key))

    @property
    def busy(self) -> int:
        return len(self._processing)

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    def reopen(self) -> None:
        """Hand out keys again (a replica that leads again after standing by)."""
        self.closed = False
        self._wakeup.set()
