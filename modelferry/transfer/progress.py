"""Progress: rich bars on a terminal, a log line every few seconds elsewhere."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from modelferry.logs import JsonFormatter

log = logging.getLogger("modelferry.progress")

# Snapshot keys attached to every progress log record (JSON log lines carry them as fields).
PROGRESS_FIELDS = ("files_done", "files_total", "bytes_done", "bytes_total", "rate_bytes_per_s", "eta_s")
# Prefix of the machine-readable line written to stderr off a terminal; the controller tails pod logs for it.
PROGRESS_PREFIX = "MODELFERRY_PROGRESS "


def format_progress_line(snapshot: dict[str, Any]) -> str:
    """``MODELFERRY_PROGRESS {json}``: one line, whatever the log format, for log tailers."""
    payload = {k: snapshot.get(k) for k in PROGRESS_FIELDS}
    return PROGRESS_PREFIX + json.dumps(payload, separators=(",", ":"))


def _report_in(line: str) -> dict[str, Any] | None:
    idx = line.find(PROGRESS_PREFIX)
    start = idx + len(PROGRESS_PREFIX) if idx >= 0 else line.find("{")
    if start < 0:
        return None
    try:
        report = json.loads(line[start:])
    except json.JSONDecodeError:
        return None
    if not isinstance(report, dict):
        return None
    # Without the prefix, only a --log-format json record of the progress logger counts.
    if idx < 0 and report.get("logger") != log.name:
        return None
    counters = ("files_done", "files_total", "bytes_done", "bytes_total")
    if not all(isinstance(report.get(k), int) and not isinstance(report.get(k), bool) for k in counters):
        return None
    return {k: report.get(k) for k in PROGRESS_FIELDS}


def parse_progress_line(text: str) -> dict[str, Any] | None:
    """The newest valid sync progress report in a chunk of log text (None when there is none).

    Reads ``MODELFERRY_PROGRESS {json}`` lines and, under ``--log-format json``, the progress
    logger's JSON records (which carry the same fields). Lines may carry a prefix (timestamps
    added by log collectors); malformed JSON, non-objects and reports without the file/byte
    counters are skipped, so a torn last line reads the one before.
    """
    for line in reversed(text.splitlines()):
        report = _report_in(line)
        if report is not None:
            return report
    return None


def _json_logs() -> bool:
    """Whether the process logs JSON records (every stderr line must then stay JSON)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


@dataclass
class Counters:
    files_total: int = 0
    bytes_total: int = 0
    files_done: int = 0
    bytes_done: int = 0
    files_skipped: int = 0
    bytes_skipped: int = 0
    bytes_transferred: int = 0  # bytes moved over the network this run (retries included)
    retries: int = 0
    started: float = field(default_factory=time.monotonic)

    def snapshot(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.bytes_transferred / elapsed
        remaining = max(self.bytes_total - self.bytes_done, 0)
        return {
            "files_done": self.files_done,
            "files_total": self.files_total,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "rate_bytes_per_s": round(rate),
            "eta_s": round(remaining / rate, 1) if rate > 0 else None,
            "elapsed_s": round(elapsed, 3),
        }


class Progress:
    """Thread-safe counters plus an optional renderer thread."""

    def __init__(self, *, mode: str = "log", interval: float = 5.0, machine_lines: bool = False) -> None:
        self.counters = Counters()
        self._machine_lines = machine_lines and mode == "log"
        self._lock = threading.Lock()
        self._mode = mode
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rich: Any = None
        self._task: Any = None

    def start(self, files_total: int, bytes_total: int, files_skipped: int, bytes_skipped: int) -> None:
        with self._lock:
            c = self.counters
            c.files_total, c.bytes_total = files_total, bytes_total
            c.files_done, c.bytes_done = files_skipped, bytes_skipped
            c.files_skipped, c.bytes_skipped = files_skipped, bytes_skipped
            c.started = time.monotonic()
        if self._mode == "rich":
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(f"{files_total} files", total=bytes_total, completed=bytes_skipped)
        if self._mode in ("log", "rich"):
            self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self._thread.start()

    def add_bytes(self, done: int, transferred: int) -> None:
        with self._lock:
            self.counters.bytes_done += done
            self.counters.bytes_transferred += transferred

    def file_done(self) -> None:
        with self._lock:
            self.counters.files_done += 1

    def retried(self) -> None:
        with self._lock:
            self.counters.retries += 1

    def _loop(self) -> None:
        interval = 0.2 if self._rich else self._interval
        while not self._stop.wait(interval):
            self._render()

    def _render(self) -> None:
        snap = self.counters.snapshot()
        if self._rich is not None:
            self._rich.update(
                self._task,
                completed=snap["bytes_done"],
                description=f"{snap['files_done']}/{snap['files_total']} files",
            )
            return
        eta = snap["eta_s"]
        # The numbers ride along as record fields too, so --log-format json lines are machine-readable.
        log.info(
            "progress: %d/%d files, %d/%d bytes, %.1f MB/s, eta %s",
            snap["files_done"],
            snap["files_total"],
            snap["bytes_done"],
            snap["bytes_total"],
            snap["rate_bytes_per_s"] / 1e6,
            "unknown" if eta is None else f"{eta:.0f}s",
            extra={k: snap[k] for k in PROGRESS_FIELDS},
        )
        if self._machine_lines and not _json_logs():  # JSON records already carry the fields
            try:
                sys.stderr.write(format_progress_line(snap) + "\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass  # stderr closed (pipe reader gone): progress is best effort

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._rich is not None:
            self._render()
            self._rich.stop()
