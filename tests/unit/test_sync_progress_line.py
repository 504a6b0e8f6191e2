"""The machine-readable progress line: formatting, parsing, and the ModelSync status fields made from it."""

from __future__ import annotations

import io
import json

import pytest

from modelferry.controller.sync.modelsync_status import live_progress
from modelferry.transfer.progress import PROGRESS_PREFIX, Progress, format_progress_line, parse_progress_line

SNAP = {"files_done": 1, "files_total": 3, "bytes_done": 50, "bytes_total": 200, "rate_bytes_per_s": 10,
        "eta_s": 15.0, "elapsed_s": 5.0}  # fmt: skip


def test_format_is_one_prefixed_json_line() -> None:
    text = format_progress_line(SNAP)
    assert text.startswith(PROGRESS_PREFIX) and "\n" not in text
    payload = json.loads(text[len(PROGRESS_PREFIX) :])
    assert payload == {k: SNAP[k] for k in payload} and "elapsed_s" not in payload


def test_parse_takes_the_newest_valid_line() -> None:
    older = format_progress_line({**SNAP, "files_done": 0})
    newer = format_progress_line(SNAP)
    text = "\n".join(["2026-01-01T00:00:00Z " + older, '{"msg":"x"}', "ts " + newer, "MODELFERRY_PROGRESS {torn"])
    assert parse_progress_line(text) == {k: SNAP[k] for k in json.loads(newer[len(PROGRESS_PREFIX) :])}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no progress here",
        "MODELFERRY_PROGRESS not json",
        "MODELFERRY_PROGRESS [1,2]",
        'MODELFERRY_PROGRESS {"progress": {"step": 1}}',  # a training sidecar line, not a sync one
        'MODELFERRY_PROGRESS {"files_done": "1", "files_total": 3, "bytes_done": 0, "bytes_total": 1}',
        'MODELFERRY_PROGRESS {"files_done": true, "files_total": 3, "bytes_done": 0, "bytes_total": 1}',
    ],
)
def test_parse_rejects_what_is_not_a_sync_report(text: str) -> None:
    assert parse_progress_line(text) is None


def test_live_progress_fields() -> None:
    report = parse_progress_line(format_progress_line(SNAP))
    assert live_progress(report) == {"filesDone": 1, "filesTotal": 3, "bytesDone": 50, "bytesTotal": 200,
                                     "percent": 25.0, "etaSeconds": 15.0, "rateBytesPerSecond": 10}  # fmt: skip
    empty = live_progress({**SNAP, "bytes_total": 0, "bytes_done": 0, "eta_s": None})
    assert empty["percent"] == 100.0 and "etaSeconds" not in empty
    assert live_progress(None) == {}


def test_log_mode_writes_machine_lines_to_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    p = Progress(mode="log", interval=3600, machine_lines=True)
    p.start(3, 200, 1, 50)
    p._render()
    p.stop()
    report = parse_progress_line(err.getvalue())
    assert report is not None and report["files_done"] == 1 and report["bytes_total"] == 200


def test_machine_lines_are_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    Progress(mode="log", interval=3600)._render()
    quiet = Progress(mode="none", machine_lines=True)
    quiet.start(1, 1, 0, 0)
    quiet.stop()
    assert PROGRESS_PREFIX not in err.getvalue()


def test_parse_reads_json_log_records_of_the_progress_logger() -> None:
    record = {"time": "t", "level": "INFO", "logger": "modelferry.progress", "message": "progress: ...", **SNAP}
    other = {**record, "logger": "modelferry.engine", "files_done": 3}
    text = json.dumps(record) + "\n" + json.dumps(other) + "\n"
    report = parse_progress_line(text)
    assert report is not None and report["files_done"] == 1 and "elapsed_s" not in report


def test_no_machine_line_under_json_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from modelferry.logs import JsonFormatter

    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    try:
        Progress(mode="log", interval=3600, machine_lines=True)._render()
    finally:
        logging.getLogger().removeHandler(handler)
    assert PROGRESS_PREFIX not in err.getvalue()
