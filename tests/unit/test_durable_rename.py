"""replace_durably: the shared atomic publish of the local store and enigma's local sink."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelferry.storage.durable_rename import replace_durably


def test_replaces_existing_file(tmp_path: Path) -> None:
    temp, final = tmp_path / "x.part", tmp_path / "x"
    final.write_bytes(b"old")
    temp.write_bytes(b"new")
    replace_durably(temp, final)
    assert final.read_bytes() == b"new"
    assert not temp.exists()


def test_missing_temp_raises_oserror_and_keeps_final(tmp_path: Path) -> None:
    final = tmp_path / "x"
    final.write_bytes(b"old")
    with pytest.raises(OSError):
        replace_durably(tmp_path / "missing.part", final)
    assert final.read_bytes() == b"old"
