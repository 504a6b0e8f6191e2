"""The local target's journal of finished parts (resume after SIGKILL)."""

from __future__ import annotations

from pathlib import Path

from modelferry.storage.local import LocalStore, LocalUpload
from modelferry.uri import parse_uri

PART = 4
DATA = b"0123456789abcdef!"  # five parts of four bytes, the last one short


def store(root: Path) -> LocalStore:
    return LocalStore(parse_uri(str(root)), root)


def write_parts(upload: LocalUpload, indexes: list[int]) -> None:
    for i in indexes:
        writer = upload.part(i, i * PART, len(DATA[i * PART : (i + 1) * PART]))
        writer.write(DATA[i * PART : (i + 1) * PART])
        writer.commit()


def killed_upload(root: Path, fingerprint: str = "fp1") -> LocalUpload:
    """An upload with parts 0 and 2 done, left as a SIGKILL would leave it."""
    upload = LocalUpload(store(root), "w.bin", len(DATA), PART, fingerprint)
    write_parts(upload, [0, 2])
    upload._journal.flush()
    return upload


def test_resume_keeps_journaled_parts(tmp_path: Path) -> None:
    killed_upload(tmp_path)
    again = LocalUpload(store(tmp_path), "w.bin", len(DATA), PART, "fp1")
    assert again.finished_parts() == {0, 2}
    assert again.read_back(8, 4) == DATA[8:12]
    write_parts(again, [1, 3, 4])
    again.complete()
    assert (tmp_path / "w.bin").read_bytes() == DATA
    assert not again.journal_path.exists() and not again.temp.exists()


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    first = killed_upload(tmp_path)
    with open(first.journal_path, "a") as fh:
        fh.write('{"i": 4')  # the kill landed mid-line
    again = LocalUpload(store(tmp_path), "w.bin", len(DATA), PART, "fp1")
    assert again.finished_parts() == {0, 2}


def test_fingerprint_change_resets(tmp_path: Path) -> None:
    killed_upload(tmp_path, "fp1")
    again = LocalUpload(store(tmp_path), "w.bin", len(DATA), PART, "fp2")  # the source changed
    assert again.finished_parts() == set()
    assert again.journal_path.read_text().count("\n") == 1  # a fresh header only


def test_part_size_change_or_missing_temp_resets(tmp_path: Path) -> None:
    killed_upload(tmp_path)
    assert LocalUpload(store(tmp_path), "w.bin", len(DATA), PART * 2, "fp1").finished_parts() == set()
    first = killed_upload(tmp_path)
    first.temp.unlink()
    assert LocalUpload(store(tmp_path), "w.bin", len(DATA), PART, "fp1").finished_parts() == set()


def test_no_fingerprint_never_resumes(tmp_path: Path) -> None:
    killed_upload(tmp_path, "")
    assert LocalUpload(store(tmp_path), "w.bin", len(DATA), PART, "").finished_parts() == set()


def test_abort_keeps_or_removes_partials(tmp_path: Path) -> None:
    upload = killed_upload(tmp_path)
    upload.abort(keep_partial=True)
    assert upload.temp.exists() and upload.journal_path.exists()
    again = LocalUpload(store(tmp_path), "w.bin", len(DATA), PART, "fp1")
    assert again.finished_parts() == {0, 2}
    again.abort(keep_partial=False)
    assert not again.temp.exists() and not again.journal_path.exists()
    assert not (tmp_path / "w.bin").exists()


def test_one_part_file_has_no_journal_and_its_leftover_is_swept(tmp_path: Path) -> None:
    # One part is the whole file: nothing to resume, so no journal is written for it.
    killed = LocalUpload(store(tmp_path), "small.bin", 5, 8, "fp1")
    writer = killed.part(0, 0, 5)
    writer.write(b"small")
    writer.commit()
    assert killed.temp.exists() and not killed.journal_path.exists()
    # A later run of the same plan neither resumes it nor keeps it, though the path is still planned.
    again = LocalUpload(store(tmp_path), "small.bin", 5, 8, "fp1")
    assert again.finished_parts() == set() and again.temp != killed.temp
    again.abort(keep_partial=True)  # a one-part partial is never kept for a resume
    assert not again.temp.exists()
    store(tmp_path).cleanup_partials(keep=["small.bin"], older_than=killed.temp.stat().st_mtime + 1)
    assert not killed.temp.exists()


def test_one_part_partial_of_a_concurrent_run_is_left_alone(tmp_path: Path) -> None:
    running = LocalUpload(store(tmp_path), "small.bin", 5, 8, "fp1")
    store(tmp_path).cleanup_partials(keep=["small.bin"], older_than=running.temp.stat().st_mtime)
    assert running.temp.exists()
    writer = running.part(0, 0, 5)
    writer.write(b"small")
    writer.commit()
    running.complete()
    assert (tmp_path / "small.bin").read_bytes() == b"small"
    assert not running.temp.exists()


def test_one_part_upload_replaces_a_multi_part_journal_of_the_same_path(tmp_path: Path) -> None:
    first = killed_upload(tmp_path)  # five parts, journaled
    upload = LocalUpload(store(tmp_path), "w.bin", len(DATA), len(DATA), "fp1")  # now one part
    assert not first.journal_path.exists() and not first.temp.exists()
    writer = upload.part(0, 0, len(DATA))
    writer.write(DATA)
    writer.commit()
    upload.complete()
    assert (tmp_path / "w.bin").read_bytes() == DATA
