"""Per-file transfer state is made a group at a time, not for the whole tree before the first byte."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelferry.settings import TransferSettings
from modelferry.storage.local import LocalStore
from modelferry.transfer.engine import Engine
from modelferry.transfer.plan import SyncOptions
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri


def test_jobs_in_memory_stay_bounded_while_many_files_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    for i in range(400):
        (src / f"d{i % 10}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 10}" / f"f{i:04d}.bin").write_bytes(i.to_bytes(4, "little") * 64)
    settings = TransferSettings(concurrency=8)
    made: list[int] = []  # jobs made minus files finished, at each creation
    finished = 0
    real_make, real_finish = Engine._make_job, Engine._finish_file

    def make(self: Engine, *args: Any, **kw: Any) -> Any:
        made.append(len(made) + 1 - finished)
        return real_make(self, *args, **kw)

    def finish(self: Engine, *args: Any, **kw: Any) -> Any:
        nonlocal finished
        result = real_finish(self, *args, **kw)
        finished += 1
        return result

    monkeypatch.setattr(Engine, "_make_job", make)
    monkeypatch.setattr(Engine, "_finish_file", finish)
    source = LocalStore(parse_uri(str(src)), src)
    target = LocalStore(parse_uri(str(tmp_path / "dst")), tmp_path / "dst")
    result = sync(source, target, settings, SyncOptions())
    assert result.files_copied == 400 and finished == 400
    # Two rounds of connections queued plus the group being made: far below the 400 files.
    assert max(made) <= 2 * settings.concurrency + 8
    assert (tmp_path / "dst" / "d3" / "f0123.bin").read_bytes() == (123).to_bytes(4, "little") * 64
