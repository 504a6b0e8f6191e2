"""Local directory to local directory through the CLI: the engine end to end without a network."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from modelferry.cli.main import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"model_type": "llama"}',
        "model-00001-of-00002.safetensors": os.urandom(3 * 1024 * 1024 + 17),
        "model-00002-of-00002.safetensors": os.urandom(1024 * 1024),
        "nested/tokenizer.json": b"{}",
        "empty.txt": b"",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_copy_verify_manifest_and_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = make_tree(tmp_path / "src")
    code, out, _ = run(["sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--json", "--part-size", "1MiB"], capsys)
    assert code == 0
    summary = json.loads(out)
    assert summary["files_copied"] == len(files)
    for name, data in files.items():
        assert (tmp_path / "dst" / name).read_bytes() == data
    manifest = json.loads((tmp_path / "dst/.modelferry/manifest.json").read_text())
    by_path = {f["path"]: f for f in manifest["files"]}
    assert (
        by_path["model-00001-of-00002.safetensors"]["sha256"]
        == hashlib.sha256(files["model-00001-of-00002.safetensors"]).hexdigest()
    )
    assert not (tmp_path / "dst/.modelferry/partial").exists()

    # Unchanged: the second run hashes the local source against the manifest and copies nothing.
    code, out, _ = run(["sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--json"], capsys)
    assert code == 0 and json.loads(out)["files_copied"] == 0

    # A changed source file of the same size is noticed.
    (tmp_path / "src/config.json").write_bytes(b'{"model_type": "qwen2"}')
    code, out, _ = run(["sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--json"], capsys)
    assert code == 0 and json.loads(out)["files_copied"] == 1
    assert (tmp_path / "dst/config.json").read_bytes() == b'{"model_type": "qwen2"}'


def test_dry_run_moves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path / "src")
    code, out, _ = run(
        ["sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--dry-run", "--exclude", "nested/"], capsys
    )
    assert code == 0
    assert "copy" in out and "nested/tokenizer.json" not in out
    assert not (tmp_path / "dst").exists()


def test_bad_uri_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["sync", "gs://bucket/x", str(tmp_path / "dst")], capsys)
    assert code == 2
    assert "Accepted forms" in err


def test_empty_source_is_permanent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "src").mkdir()
    code, _, err = run(["sync", str(tmp_path / "src"), str(tmp_path / "dst")], capsys)
    assert code == 3
    assert "lists no files" in err


def test_size_limit_refused_before_any_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path / "src")
    code, _, err = run(["sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--size-limit", "1MB"], capsys)
    assert code == 3
    assert "size limit" in err
    assert not (tmp_path / "dst").exists()


def test_termination_message_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path / "src")
    term = tmp_path / "termination-log"
    code, _, _ = run(["sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--termination-log", str(term)], capsys)
    assert code == 0
    payload = json.loads(term.read_text())
    assert payload["status"] == "complete" and payload["files"] == 5
    code, _, _ = run(["sync", str(tmp_path / "nope"), str(tmp_path / "dst2"), "--termination-log", str(term)], capsys)
    assert code == 3
    assert json.loads(term.read_text())["status"] == "failed"
