"""Directory descriptors kept for a run: reused, synced once at the end, closed, never through a link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelferry.errors import UnsafePathError
from modelferry.storage import dir_handles
from modelferry.storage.dir_handles import DirHandles, RandomSuffixes
from modelferry.storage.local import LocalStore
from modelferry.storage.nofollow import fsync_dir
from modelferry.uri import parse_uri


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The directory descriptors fsync_dir was called with (the real sync still runs)."""
    calls: list[int] = []

    def counting(fd: int) -> None:
        calls.append(os.stat(fd).st_ino)
        fsync_dir(fd)

    monkeypatch.setattr(dir_handles, "fsync_dir", counting)
    return calls


def rename_in(handles: DirHandles, parts: tuple[str, ...], name: str) -> None:
    with handles.opened(parts, describe="t") as fd:
        os.close(os.open(name + ".tmp", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        os.replace(name + ".tmp", name, src_dir_fd=fd, dst_dir_fd=fd)
        handles.renamed_into(fd)


def test_kept_descriptors_are_reused_and_synced_once_when_the_scope_ends(tmp_path: Path, synced: list[int]) -> None:
    handles = DirHandles(tmp_path / "root")
    before = open_fds()
    with handles.keeping():
        for n in range(5):
            rename_in(handles, ("a", "b"), f"f{n}")
            rename_in(handles, ("c",), f"g{n}")
        assert synced == []  # deferred
        assert len(open_fds() - before) == 3  # root, a/b, c: opened once each, still open
    assert sorted(synced) == sorted({(tmp_path / "root/a/b").stat().st_ino, (tmp_path / "root/c").stat().st_ino})
    assert open_fds() == before
    assert sorted(p.name for p in (tmp_path / "root/a/b").iterdir()) == [f"f{n}" for n in range(5)]


def test_outside_a_scope_nothing_is_kept_and_every_rename_is_synced_at_once(tmp_path: Path, synced: list[int]) -> None:
    handles = DirHandles(tmp_path)
    before = open_fds()
    rename_in(handles, ("a",), "f")
    rename_in(handles, ("a",), "g")
    assert synced == [(tmp_path / "a").stat().st_ino] * 2
    assert open_fds() == before


def test_beyond_the_limit_directories_are_opened_and_synced_per_use(tmp_path: Path, synced: list[int]) -> None:
    handles = DirHandles(tmp_path, limit=2)  # the root and one directory
    before = open_fds()
    with handles.keeping():
        rename_in(handles, ("kept",), "f")
        rename_in(handles, ("extra",), "f")
        assert synced == [(tmp_path / "extra").stat().st_ino]
        assert len(open_fds() - before) == 2
    assert synced == [(tmp_path / "extra").stat().st_ino, (tmp_path / "kept").stat().st_ino]
    assert open_fds() == before


def test_a_link_at_a_directory_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "sub").symlink_to("elsewhere")
    handles = DirHandles(tmp_path)
    with handles.keeping(), pytest.raises(UnsafePathError, match="symbolic link 'sub'"):
        rename_in(handles, ("sub",), "f")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_an_error_in_the_scope_still_closes_everything_and_wins(tmp_path: Path) -> None:
    handles = DirHandles(tmp_path)
    before = open_fds()
    with pytest.raises(RuntimeError, match="boom"), handles.keeping():
        rename_in(handles, ("a",), "f")
        raise RuntimeError("boom")
    assert open_fds() == before


def test_a_failing_directory_sync_is_raised_after_every_descriptor_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    handles = DirHandles(tmp_path)
    before = open_fds()
    with pytest.raises(OSError, match="Input/output error"), handles.keeping():
        rename_in(handles, ("a",), "f")
        monkeypatch.setattr(dir_handles, "fsync_dir", failing)
    assert open_fds() == before


def test_sync_into_a_local_target_leaves_no_descriptor_open(tmp_path: Path) -> None:
    from modelferry.settings import TransferSettings
    from modelferry.transfer.sync import sync

    src = tmp_path / "src"
    for n in range(40):
        (src / f"d{n % 4}").mkdir(parents=True, exist_ok=True)
        (src / f"d{n % 4}" / f"f{n}").write_bytes(os.urandom(100 + n))
    before = open_fds()
    target = LocalStore(parse_uri(str(tmp_path / "dst")), tmp_path / "dst")
    result = sync(LocalStore(parse_uri(str(src)), src), target, TransferSettings())
    assert result.files_copied == 40
    result.plan.close()  # the plan's scratch index lives as long as the result
    assert open_fds() == before
    for n in range(40):
        assert (tmp_path / "dst" / f"d{n % 4}" / f"f{n}").read_bytes() == (src / f"d{n % 4}" / f"f{n}").read_bytes()


def test_random_suffixes_are_distinct_hex() -> None:
    suffixes = RandomSuffixes()
    seen = {suffixes.next() for _ in range(2000)}  # spans several refills of the pool
    assert len(seen) == 2000
    assert all(len(s) == 16 and int(s, 16) >= 0 for s in seen)


@pytest.mark.parametrize(
    ("errno_", "kind", "text"),
    [(28, "InsufficientSpaceError", "no space left on the target"), (5, "RetryableError", "I/O error on")],
)
def test_a_directory_sync_failing_at_the_end_of_a_sync_is_our_error_naming_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, errno_: int, kind: str, text: str
) -> None:
    """A full disk or EIO when the kept directories are synced, after the copies: a named error, not an OSError."""
    from modelferry.settings import TransferSettings
    from modelferry.transfer.sync import sync

    src = tmp_path / "src"
    src.mkdir()
    for n in range(5):
        (src / f"f{n}").write_bytes(os.urandom(100))

    def failing(fd: int) -> None:
        raise OSError(errno_, os.strerror(errno_))

    monkeypatch.setattr(dir_handles, "fsync_dir", failing)
    target = LocalStore(parse_uri(str(tmp_path / "dst")), tmp_path / "dst")
    with pytest.raises(Exception) as info:
        sync(LocalStore(parse_uri(str(src)), src), target, TransferSettings())
    assert type(info.value).__name__ == kind
    assert not isinstance(info.value, OSError)
    assert text in str(info.value) and str(tmp_path / "dst") in str(info.value)
