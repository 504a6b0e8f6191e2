"""Stale partial downloads (files no longer in the plan) are removed after a successful sync."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from modelferry.errors import NotFoundError
from modelferry.settings import Credentials, TransferSettings
from modelferry.storage import open_store
from modelferry.storage.local import PARTIAL_DIR, LocalStore, partial_stem
from modelferry.transfer.plan import SyncOptions
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri


def store(path: Path) -> LocalStore:
    opened = open_store(parse_uri(str(path)), Credentials())
    assert isinstance(opened, LocalStore)
    return opened


def leave_partial(target: LocalStore, path: str, *, age_s: float) -> list[Path]:
    """A killed run's leftovers for ``path``: the .part and its journal, last touched ``age_s`` ago."""
    upload = target.open_upload(path, 10, 5, fingerprint="fp")
    writer = upload.part(0, 0, 5)
    writer.write(b"12345")
    writer.commit()
    upload.abort(keep_partial=True)
    stem = partial_stem(path)
    files = sorted((target.root / PARTIAL_DIR).glob(f"{stem}*"))
    assert len(files) == 2  # the .part (with its random suffix) and the .journal
    when = time.time() - age_s
    for f in files:
        assert f.exists()
        os.utime(f, (when, when))
    return files


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_bytes(b"{}")
    (src / "model.bin").write_bytes(os.urandom(4096))
    return src


def test_partials_outside_the_plan_are_removed_after_success(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    target = store(out)
    # Left by an earlier run with other filters, and by one for a file the source no longer has.
    stale = leave_partial(target, "extra/other.bin", age_s=60) + leave_partial(target, "gone.bin", age_s=60)
    # Excluded now, so not in this plan: still stale.
    excluded = leave_partial(target, "model.bin", age_s=60)
    sync(store(source), target, TransferSettings(), SyncOptions(include=("config.json",)))
    assert (out / "config.json").read_bytes() == b"{}"
    assert not any(f.exists() for f in stale + excluded)
    assert not (out / PARTIAL_DIR).exists()  # nothing left: the directory goes too


def test_partials_of_planned_files_and_concurrent_runs_are_kept(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    target = store(out)
    sync(store(source), target, TransferSettings(), SyncOptions())
    # A planned file already complete at the target is skipped by the next run; its old partial is not "stale".
    planned = leave_partial(target, "config.json", age_s=60)
    # Another run writing into the same target right now (touched after this run started).
    concurrent = leave_partial(target, "someone-else.bin", age_s=-5)
    stale = leave_partial(target, "old.bin", age_s=60)
    result = sync(store(source), target, TransferSettings(), SyncOptions())
    assert result.files_copied == 0
    assert all(f.exists() for f in planned + concurrent)
    assert not any(f.exists() for f in stale)


def test_failed_sync_keeps_every_partial(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    target = store(out)
    stale = leave_partial(target, "old.bin", age_s=60)
    (source / "model.bin").unlink()

    class Vanishing(LocalStore):
        def read(self, path, start, length, *, info=None):  # type: ignore[no-untyped-def]
            raise NotFoundError("gone mid-copy", obj=path)

    src = Vanishing(parse_uri(str(source)), source)
    with pytest.raises(NotFoundError):
        sync(src, target, TransferSettings(), SyncOptions())
    assert all(f.exists() for f in stale)


def test_cleanup_without_a_plan_only_removes_an_empty_directory(tmp_path: Path) -> None:
    target = store(tmp_path / "out")
    kept = leave_partial(target, "a.bin", age_s=60)
    target.cleanup_partials()
    assert all(f.exists() for f in kept)
    for f in kept:
        f.unlink()
    target.cleanup_partials()
    assert not (target.root / PARTIAL_DIR).exists()
