"""Progress counters, the periodic log line off a terminal, and the choice of renderer."""

from __future__ import annotations

import io
import logging
import re
import sys
import time

import pytest

from modelferry.cli.dataplane import progress_for
from modelferry.transfer.progress import PROGRESS_FIELDS, Counters, Progress

LINE_RE = re.compile(r"^progress: (\d+)/(\d+) files, (\d+)/(\d+) bytes, (\d+\.\d) MB/s, eta (\d+s|unknown)$")


def progress_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "modelferry.progress"]


def wait_for_records(caplog: pytest.LogCaptureFixture, count: int) -> list[logging.LogRecord]:
    deadline = time.monotonic() + 10
    while len(progress_records(caplog)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return progress_records(caplog)


def test_snapshot_rate_and_eta() -> None:
    c = Counters(files_total=2, bytes_total=1000, bytes_done=250, bytes_transferred=250)
    c.started = time.monotonic() - 10
    snap = c.snapshot()
    assert 24 <= snap["rate_bytes_per_s"] <= 25  # 250 bytes in ~10 s
    assert 29 <= snap["eta_s"] <= 31  # 750 bytes left at ~25 B/s
    assert snap["elapsed_s"] >= 10
    assert set(PROGRESS_FIELDS) <= snap.keys()


def test_snapshot_eta_unknown_before_any_byte_and_zero_when_done() -> None:
    assert Counters(bytes_total=100).snapshot()["eta_s"] is None
    done = Counters(bytes_total=100, bytes_done=100, bytes_transferred=100)
    assert done.snapshot()["eta_s"] == 0


def test_resumed_bytes_count_as_done_but_not_as_transferred() -> None:
    p = Progress(mode="none")
    p.start(files_total=3, bytes_total=300, files_skipped=1, bytes_skipped=100)
    p.add_bytes(50, 0)  # a part found in the resume journal
    p.add_bytes(80, 80)
    p.add_bytes(-30, 0)  # a failed part rolls its bytes back
    p.retried()
    p.file_done()
    p.stop()
    c = p.counters
    assert (c.files_done, c.files_skipped, c.bytes_done, c.bytes_transferred, c.retries) == (2, 1, 200, 80, 1)


def test_log_mode_emits_a_line_every_interval_with_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="modelferry.progress")
    p = Progress(mode="log", interval=0.01)
    p.start(files_total=4, bytes_total=4000, files_skipped=1, bytes_skipped=1000)
    p.add_bytes(500, 500)
    try:
        records = wait_for_records(caplog, 2)
    finally:
        p.stop()
    assert len(records) >= 2, "the renderer thread logged fewer than two lines"
    for record in records:
        match = LINE_RE.match(record.getMessage())
        assert match, record.getMessage()
        assert match.group(1, 2, 3, 4) == ("1", "4", "1500", "4000")
        assert record.levelno == logging.INFO
        for key in PROGRESS_FIELDS:
            assert hasattr(record, key), key
        assert record.bytes_done == 1500 and record.bytes_total == 4000  # type: ignore[attr-defined]
        assert record.eta_s is not None and record.eta_s > 0  # type: ignore[attr-defined]


def test_eta_is_unknown_until_bytes_move(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="modelferry.progress")
    p = Progress(mode="log", interval=0.01)
    p.start(files_total=1, bytes_total=100, files_skipped=0, bytes_skipped=0)
    try:
        records = wait_for_records(caplog, 1)
    finally:
        p.stop()
    assert records and records[0].getMessage().endswith("eta unknown")
    assert records[0].eta_s is None  # type: ignore[attr-defined]


def test_stop_ends_the_renderer_and_no_line_follows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="modelferry.progress")
    p = Progress(mode="log", interval=0.01)
    p.start(files_total=1, bytes_total=10, files_skipped=0, bytes_skipped=0)
    wait_for_records(caplog, 1)
    p.stop()
    assert p._thread is not None and not p._thread.is_alive()
    count = len(progress_records(caplog))
    p.add_bytes(5, 5)  # what a leaked renderer would report; the renderer was joined above, so none can
    p.file_done()
    assert len(progress_records(caplog)) == count


def test_none_mode_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="modelferry.progress")
    p = Progress(mode="none", interval=0.01)
    p.start(files_total=1, bytes_total=10, files_skipped=0, bytes_skipped=0)
    p.add_bytes(10, 10)
    p.stop()
    assert p._thread is None
    assert progress_records(caplog) == []


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(
    ("tty", "json_output", "quiet", "mode"),
    [
        (True, False, False, "rich"),  # a terminal gets bars
        (True, True, False, "log"),  # --json keeps the terminal free of bars
        (False, False, False, "log"),  # a pod log gets lines
        (False, False, True, "none"),
        (True, False, True, "none"),
    ],
)
def test_progress_for_picks_the_renderer(
    monkeypatch: pytest.MonkeyPatch, tty: bool, json_output: bool, quiet: bool, mode: str
) -> None:
    monkeypatch.setattr(sys, "stderr", _Stream(tty))
    p = progress_for(json_output, 0.5, quiet)
    assert p._mode == mode
    if mode == "log":
        assert p._interval == 0.5


def test_rich_mode_renders_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    monkeypatch.setattr(sys, "stderr", _Stream(True))
    p = Progress(mode="rich")
    p.start(files_total=2, bytes_total=200, files_skipped=0, bytes_skipped=0)
    p.add_bytes(200, 200)
    p.file_done()
    p.file_done()
    p.stop()
    assert p._thread is not None and not p._thread.is_alive()
    assert p._rich.tasks[0].completed == 200
