"""Readers that turn what a trainer writes into metric records (pure parsing + incremental tails).

Formats:
- the metrics file: one JSON object per line, ``{"step": 10, "epoch": 0.5, "loss": 1.2, ...}``;
  numeric fields other than ``step``/``epoch``/``timestamp`` are metrics; ``epoch`` is logged as one too;
- ``trainer_state.json`` (Hugging Face Trainer): its ``log_history`` list of the same shape;
- stdout: lines that are JSON objects holding a numeric ``step`` (other lines pass through).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESERVED = {"step", "timestamp", "total_steps", "event"}


@dataclass(frozen=True)
class MetricRecord:
    """One report: a step, its metric values and a wall-clock timestamp in milliseconds."""

    step: int
    values: dict[str, float]
    timestamp_ms: int
    total_steps: int | None = None


def record_from(obj: Any, now_ms: int | None = None) -> MetricRecord | None:
    """A record from one decoded JSON object, or None when it is not a metrics report."""
    if not isinstance(obj, dict):
        return None
    step = obj.get("step")
    if isinstance(step, bool) or not isinstance(step, int | float):
        return None
    values: dict[str, float] = {}
    for key, value in obj.items():
        if key in RESERVED or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            values[str(key)] = float(value)
    if not values:
        return None
    ts = obj.get("timestamp")
    stamp = int(ts * 1000) if isinstance(ts, int | float) and ts < 1e11 else (now_ms or int(time.time() * 1000))
    total = obj.get("total_steps") or obj.get("max_steps")
    return MetricRecord(int(step), values, stamp, int(total) if isinstance(total, int | float) else None)


def parse_line(line: str, now_ms: int | None = None) -> MetricRecord | None:
    """A record from one text line (JSON object with a numeric ``step``), else None."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        return record_from(json.loads(text), now_ms)
    except json.JSONDecodeError:
        return None


@dataclass
class JsonLinesTail:
    """Reads complete new lines from a growing file; a partial last line waits for its newline."""

    path: Path
    offset: int = 0
    _partial: bytes = b""

    def read(self) -> list[MetricRecord]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        out = []
        for raw in lines:
            rec = parse_line(raw.decode("utf-8", "replace"))
            if rec is not None:
                out.append(rec)
        return out


@dataclass
class TrainerStateReader:
    """Follows ``trainer_state.json``; yields each ``log_history`` entry once."""

    path: Path
    seen: int = 0
    _mtime: float = field(default=-1.0)

    def read(self) -> list[MetricRecord]:
        try:
            mtime = self.path.stat().st_mtime
            if mtime == self._mtime:
                return []
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return []  # not there yet, or caught mid-write: read again next time
        self._mtime = mtime
        history = state.get("log_history") if isinstance(state, dict) else None
        if not isinstance(history, list):
            return []
        total = state.get("max_steps")
        out = []
        for entry in history[self.seen :]:
            item = entry
            if isinstance(entry, dict) and isinstance(total, int) and "total_steps" not in entry:
                item = {**entry, "total_steps": total}
            rec = record_from(item)
            if rec is not None:
                out.append(rec)
        self.seen = len(history)
        return out


class NewestTrainerState(TrainerStateReader):
    """Follows whichever ``trainer_state.json`` under ``root`` changed last (the HF Trainer writes one
    per checkpoint and one at the end; each holds the whole log history, so the seen count carries over)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root / "trainer_state.json")
        self.root = root

    def read(self) -> list[MetricRecord]:
        candidates = [p for p in self.root.rglob("trainer_state.json") if p.is_file()] if self.root.is_dir() else []
        if not candidates:
            return []
        newest = max(candidates, key=lambda p: p.stat().st_mtime)
        if newest != self.path:
            self.path, self._mtime = newest, -1.0
        return super().read()


@dataclass
class Progress:
    """What the controller mirrors into TrainingRun status."""

    step: int = 0
    total_steps: int | None = None
    latest: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    last_change: float = field(default_factory=time.monotonic)

    def update(self, rec: MetricRecord, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.step = max(self.step, rec.step)
        if rec.total_steps:
            self.total_steps = rec.total_steps
        self.latest.update(rec.values)
        self.last_change = now

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        out: dict[str, Any] = {"step": self.step, "metrics": dict(self.latest)}
        if self.total_steps:
            pct = min(100.0, 100.0 * self.step / self.total_steps)
            out["totalSteps"] = self.total_steps
            out["percent"] = round(pct, 1)
            elapsed = now - self.started
            if 0 < self.step < self.total_steps:
                out["etaSeconds"] = round(elapsed / self.step * (self.total_steps - self.step), 1)
        return out
