"""rename_durably and the link-refusing walk: the shared atomic publish of the local store and enigma's sink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelferry.errors import UnsafePathError
from modelferry.storage.nofollow import create_file, open_dir, opened_root, rename_durably


def test_replaces_existing_file_and_a_link_at_the_final_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"victim")
    (tmp_path / "x").symlink_to(victim)
    with opened_root(tmp_path, create=False) as root:
        os.close(create_file(root, "x.part", "x"))
        (tmp_path / "x.part").write_bytes(b"new")
        rename_durably(root, "x.part", root, "x")
    assert (tmp_path / "x").read_bytes() == b"new" and not (tmp_path / "x").is_symlink()
    assert victim.read_bytes() == b"victim" and not (tmp_path / "x.part").exists()


def test_missing_temp_raises_oserror_and_keeps_final(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"old")
    with opened_root(tmp_path, create=False) as root, pytest.raises(OSError):
        rename_durably(root, "missing.part", root, "x")
    assert (tmp_path / "x").read_bytes() == b"old"


def test_walk_and_create_refuse_links(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "sub").symlink_to("elsewhere")
    (tmp_path / "f").symlink_to(tmp_path / "elsewhere" / "target")
    with opened_root(tmp_path, create=False) as root:
        with pytest.raises(UnsafePathError, match="symbolic link 'sub'"):
            open_dir(root, ["sub", "deeper"], create=True, describe=str(tmp_path))
        with pytest.raises(UnsafePathError, match="symbolic link 'f'"):
            create_file(root, "f", str(tmp_path))
    assert not list((tmp_path / "elsewhere").iterdir())
