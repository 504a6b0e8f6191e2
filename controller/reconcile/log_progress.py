"""Progress read from a running pod's log: only while the pod runs, at most every ``interval`` seconds per object.

Pod events requeue an object far more often than its progress changes, and every read is a pods/log
request; between reads the last report stands. Progress is a nicety: a log that cannot be read (a
missing pods/log permission, a pod gone) keeps the last report and never fails the reconcile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

from modelferry.controller.kube.client import Kube
from modelferry.errors import ModelferryError

log = logging.getLogger(__name__)
Report = dict[str, Any]


class LogProgress:
    """The newest report per object key; ``parse`` finds it in a chunk of the container's log."""

    def __init__(
        self,
        kube: Kube,
        container: str,
        parse: Callable[[str], Report | None],
        *,
        interval: Callable[[], float],
        tail_lines: int,
    ) -> None:
        self.kube = kube
        self.container = container
        self.parse = parse
        self.interval = interval
        self.tail_lines = tail_lines
        self._seen: dict[Hashable, tuple[float, Report | None]] = {}

    def forget(self, key: Hashable) -> None:
        """The object stopped running (or its workload was replaced): the next run starts afresh."""
        self._seen.pop(key, None)

    async def read(self, key: Hashable, namespace: str, pod: dict[str, Any] | None) -> Report | None:
        """The report from ``pod``'s log when it runs and the last read is older than the interval."""
        cached = self._seen.get(key)
        last = cached[1] if cached else None
        if pod is None or (pod.get("status") or {}).get("phase") != "Running":
            return last
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.interval():
            return last
        name = str((pod.get("metadata") or {}).get("name"))
        try:
            text = await self.kube.pod_log(namespace, name, self.container, tail_lines=self.tail_lines)
        except ModelferryError as exc:
            log.warning("cannot read the log of pod %s/%s for progress: %s", namespace, name, exc)
            text = ""
        report = self.parse(text) or last
        self._seen[key] = (now, report)
        return report
