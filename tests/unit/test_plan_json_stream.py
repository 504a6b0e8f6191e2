"""A dry run's ``--json`` plan is written item by item, and reads back as the same document."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from modelferry.cli.main import main
from modelferry.cli.outcome import write_with_items

NASTY = ["plain.bin", 'q"uote.bin', 'x "items": [] y.bin', "new\nline.bin", "ünï.bin"]


def test_streamed_items_read_back_as_the_whole_document() -> None:
    items = [{"path": p, "size": n, "action": "copy"} for n, p in enumerate(NASTY)]
    summary = {"status": "planned", "source": 'a "items": []', "plan": {"files": len(items), "items": []}}
    out = io.StringIO()
    write_with_items(out, summary, iter(items))
    assert json.loads(out.getvalue()) == {**summary, "plan": {"files": len(items), "items": items}}


def test_no_items_is_an_empty_list() -> None:
    out = io.StringIO()
    write_with_items(out, {"status": "planned", "plan": {"files": 0, "items": []}}, iter([]))
    assert json.loads(out.getvalue()) == {"status": "planned", "plan": {"files": 0, "items": []}}


def test_dry_run_json_lists_every_file_and_moves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for n in range(30):
        (src / f"f{n:02d}.bin").write_bytes(b"x" * n)
    with pytest.raises(SystemExit) as exit_:
        main(["sync", str(src), str(tmp_path / "dst"), "--dry-run", "--json"])
    assert exit_.value.code in (0, None)
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "planned" and summary["plan"]["files"] == 30
    assert sorted(i["path"] for i in summary["plan"]["items"]) == [f"f{n:02d}.bin" for n in range(30)]
    assert {i["action"] for i in summary["plan"]["items"]} == {"copy"}
    assert not (tmp_path / "dst").exists()


def test_a_dry_runs_termination_message_has_the_summary_without_the_items(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The termination log is capped at 4 KiB by Kubernetes: a plan of many files must not fill it."""
    src = tmp_path / "src"
    src.mkdir()
    for n in range(200):
        (src / f"a-rather-long-file-name-{n:03d}.bin").write_bytes(b"x" * n)
    term = tmp_path / "termination-log"
    with pytest.raises(SystemExit) as exit_:
        main(["sync", str(src), str(tmp_path / "dst"), "--dry-run", "--json", "--termination-log", str(term)])
    assert exit_.value.code in (0, None)
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["plan"]["items"]) == 200  # stdout has them all
    message = json.loads(term.read_text())
    assert message["status"] == "planned" and message["plan"]["files"] == 200
    assert message["plan"].get("items", []) == []
    assert len(term.read_bytes()) < 4096
