"""Pure lifecycle decisions: stall detection, early stopping, timeouts."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from modelferry.sidecar.metrics import MetricRecord
from modelferry.sidecar.settings import LifecycleSettings


class Verdict(enum.Enum):
    """What the supervisor should do now."""

    CONTINUE = "continue"
    STALLED = "stalled"
    EARLY_STOP = "early-stop"
    TIMEOUT = "timeout"


@dataclass
class EarlyStopping:
    """Lower-is-better metric; stops after ``patience`` reports without an improvement > threshold."""

    metric: str
    patience: int
    threshold: float
    best: float | None = None
    bad: int = 0

    def observe(self, rec: MetricRecord) -> bool:
        """True when training should stop."""
        if self.patience <= 0 or self.metric not in rec.values:
            return False
        value = rec.values[self.metric]
        if self.best is None or value < self.best - self.threshold:
            self.best, self.bad = value, 0
            return False
        self.bad += 1
        return self.bad >= self.patience


@dataclass
class Watchdog:
    """Decides from timestamps (monotonic seconds) whether the run stalled or timed out."""

    settings: LifecycleSettings
    started: float
    last_activity: float = field(default=0.0)
    early: EarlyStopping | None = None
    warned_stall: bool = False

    def __post_init__(self) -> None:
        self.last_activity = self.last_activity or self.started
        s = self.settings
        self.early = EarlyStopping(s.early_stopping_metric, s.early_stopping_patience, s.early_stopping_threshold)

    def activity(self, now: float) -> None:
        """New metrics or output arrived."""
        self.last_activity = now
        self.warned_stall = False

    def observe(self, rec: MetricRecord, now: float) -> Verdict:
        self.activity(now)
        if self.early is not None and self.early.observe(rec):
            return Verdict.EARLY_STOP
        return Verdict.CONTINUE

    def check(self, now: float) -> Verdict:
        s = self.settings
        if s.timeout and now - self.started > s.timeout:
            return Verdict.TIMEOUT
        if s.stall_timeout and now - self.last_activity > s.stall_timeout:
            return Verdict.STALLED
        return Verdict.CONTINUE
