"""The shared outcome reporting of sync-like commands: termination message and --json output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelferry.cli.outcome import failure_record, report_failure, report_summary
from modelferry.errors import NotFoundError


def test_failure_record_carries_reason_and_exit_code() -> None:
    record = failure_record(NotFoundError("no such model", obj="hf://x/y"))
    assert record["status"] == "failed"
    assert record["exit_code"] == 3
    assert record["reason"] == NotFoundError("x").reason
    assert "no such model" in record["message"]


def test_report_failure_writes_termination_log_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    term = tmp_path / "termination-log"
    report_failure(str(term), NotFoundError("gone"), json_output=True)
    written = json.loads(term.read_text())
    assert written["status"] == "failed"
    assert json.loads(capsys.readouterr().out) == written


def test_report_failure_without_json_keeps_stdout_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    term = tmp_path / "termination-log"
    report_failure(str(term), NotFoundError("gone"), json_output=False)
    assert json.loads(term.read_text())["status"] == "failed"
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("json_output", [True, False])
def test_report_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str], json_output: bool) -> None:
    term = tmp_path / "termination-log"
    summary = {"status": "complete", "files_copied": 2}
    report_summary(str(term), summary, json_output=json_output)
    assert json.loads(term.read_text()) == summary
    out = capsys.readouterr().out
    assert (json.loads(out) == summary) if json_output else out == ""
