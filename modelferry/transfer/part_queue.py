"""The parts waiting for a connection, and the memory budget of the parts in flight.

Parts of every file wait in one queue in file order (largest files first); worker threads take
them from the head. For targets that must hold a whole part in memory (object stores), a part is
only handed out when the memory budget allows, in queue order, which keeps peak memory bounded and
cannot deadlock: the earliest part in flight always holds its share. One condition lock guards the
queue, the budget, the count of files left and the run's first error; a one-part file takes it
twice (handed out, placed), and wakes waiting workers only when some wait.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator

from modelferry.transfer.inflight import FileJob, interleave


class PartQueue:
    """Hands parts to workers in queue order within ``memory_budget`` (``cost`` says what a part holds)."""

    def __init__(self, concurrency: int, memory_budget: int, cost: Callable[[FileJob, int], int]) -> None:
        self.concurrency = concurrency
        self.memory_budget = memory_budget
        self.cost = cost
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[FileJob, int]] = collections.deque()
        self._groups: Iterator[list[FileJob]] = iter(())
        self._budget_used = 0
        self._jobs_left = 0
        self._waiting = 0  # workers waiting for a part (a placed file wakes them only when there are some)
        self.error: BaseException | None = None
        self.files_done = 0
        self.bytes_done = 0

    def start(self, groups: Iterator[list[FileJob]], jobs: int) -> int:
        """Queue the first groups of ``jobs`` files; returns how many parts wait now."""
        with self._cond:
            self._groups = groups
            self._jobs_left = jobs
            self._refill()
            return len(self._queue)

    def _refill(self) -> None:
        """Queue the parts of further groups while fewer than two rounds of connections wait (lock held)."""
        while len(self._queue) < 2 * self.concurrency:
            members = next(self._groups, None)
            if members is None:
                return
            for n, idx in interleave([len(j.parts) for j in members], len(members)):
                self._queue.append((members[n], idx))

    def take(self) -> tuple[FileJob, int] | None:
        """The next part to copy, once the budget allows; None when the run is over or failed."""
        with self._cond:
            while True:
                self._refill()
                if self.error is not None or (self._jobs_left == 0 and not self._queue):
                    self._cond.notify_all()
                    return None
                if self._queue:
                    job, idx = self._queue[0]
                    cost = self.cost(job, idx)
                    if self._budget_used == 0 or self._budget_used + cost <= self.memory_budget:
                        self._queue.popleft()
                        self._budget_used += cost
                        return job, idx
                self._waiting += 1
                self._cond.wait(timeout=1.0)
                self._waiting -= 1

    def fail(self, exc: BaseException) -> None:
        """Record the run's first error and wake every worker (they stop)."""
        with self._cond:
            if self.error is None:
                self.error = exc
            self._cond.notify_all()

    def release(self, cost: int) -> None:
        """Give back the budget of a part whose bytes left memory."""
        with self._cond:
            self._budget_used -= cost
            self._cond.notify_all()

    def requeue(self, job: FileJob) -> None:
        """Put every part of ``job`` back at the head (a second attempt after a failed verification)."""
        with self._cond:
            for idx in reversed(range(len(job.parts))):
                self._queue.appendleft((job, idx))
            self._cond.notify_all()

    def file_done(self, size: int) -> None:
        """One file placed."""
        with self._cond:
            self.files_done += 1
            self.bytes_done += size
            self._jobs_left -= 1
            if self._waiting or self._jobs_left == 0:
                self._cond.notify_all()
