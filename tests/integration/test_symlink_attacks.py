"""Links planted in a target or a source, and names no filesystem holds: real files, links and child processes."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelferry.errors import UnsafePathError
from modelferry.settings import Credentials, TransferSettings
from modelferry.storage import open_store
from modelferry.storage.base import PARTIAL_DIR, partial_stem
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri
from tests.servers.hfhub import FakeHub, HubRepo
from tests.servers.lifecycle import run_modelferry

ROOT = Path(__file__).resolve().parents[2]


def run_sync(*args: str) -> tuple[int, dict[str, object]]:
    """``modelferry sync ... --json`` in a child process: (exit code, the JSON record it printed)."""
    proc = run_modelferry("sync", *args, "--json", timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, json.loads("\n".join(lines)) if lines else {}


def local_sync(src: Path, target_dir: Path, **kw: bool) -> None:
    settings = TransferSettings(free_space_margin=0)
    sync(
        open_store(parse_uri(str(src)), Credentials(), **kw),
        open_store(parse_uri(str(target_dir)), Credentials()),
        settings,
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_bytes(b'{"a": 1}')
    (src / "sub" / "weights.bin").write_bytes(os.urandom(100_000))
    return src


def test_sync_never_writes_through_a_symlink_in_the_target(tmp_path: Path, source: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "weights.bin"
    victim.write_bytes(b"victim")
    target_dir = tmp_path / "dst"
    target_dir.mkdir()
    (target_dir / "sub").symlink_to(
        "../outside"
    )  # target_dir/sub -> ../outside: a write to sub/weights.bin would land there
    code, record = run_sync(str(source), str(target_dir))
    assert code == 3 and record["reason"] == "UnsafePath", record
    assert victim.read_bytes() == b"victim" and sorted(p.name for p in outside.iterdir()) == ["weights.bin"]

    # A link inside the target's own bookkeeping: the partial directory, or the manifest.
    (target_dir / "sub").unlink()
    (target_dir / ".modelferry").mkdir()
    (target_dir / ".modelferry" / "partial").symlink_to(outside)
    code, record = run_sync(str(source), str(target_dir))
    assert code == 3 and record["reason"] == "UnsafePath", record
    assert sorted(p.name for p in outside.iterdir()) == ["weights.bin"] and victim.read_bytes() == b"victim"

    (target_dir / ".modelferry" / "partial").unlink()
    (target_dir / ".modelferry" / "manifest.json").symlink_to(victim)
    code, record = run_sync(str(source), str(target_dir))
    assert code == 3 and record["reason"] == "UnsafePath", record
    assert victim.read_bytes() == b"victim"

    # A link planted at the partial file name older versions used (<stem>.part): never opened now.
    (target_dir / ".modelferry" / "manifest.json").unlink()
    (target_dir / ".modelferry" / "partial").mkdir()
    for rel in ("config.json", "sub/weights.bin"):
        (target_dir / PARTIAL_DIR / f"{partial_stem(rel)}.part").symlink_to(victim)
    code, record = run_sync(str(source), str(target_dir))
    assert code == 0, record
    assert victim.read_bytes() == b"victim"
    assert (target_dir / "sub" / "weights.bin").read_bytes() == (source / "sub" / "weights.bin").read_bytes()


def test_partial_files_have_unpredictable_names_and_still_resume(tmp_path: Path) -> None:
    store = open_store(parse_uri(str(tmp_path / "dst")), Credentials())
    first = store.open_upload("model.bin", 10, 5, fingerprint="v1")
    writer = first.part(0, 0, 5)
    writer.write(b"12345")
    writer.commit()
    first.abort(keep_partial=True)
    again = store.open_upload("model.bin", 10, 5, fingerprint="v1")
    other = store.open_upload("other.bin", 10, 5, fingerprint="v1")
    try:
        assert again.finished_parts() == {0}  # the journal names the partial file
        assert again.temp == first.temp  # type: ignore[attr-defined]
        assert first.temp.name != f"{partial_stem('model.bin')}.part"  # type: ignore[attr-defined]
        assert len(first.temp.name) == 24 + 1 + 16 + len(".part")  # type: ignore[attr-defined]
    finally:
        again.abort(keep_partial=True)
        other.abort()
    # A hard link planted as the recorded partial file: the next run starts over instead of writing into it.
    victim = tmp_path / "victim"
    victim.write_bytes(b"0123456789")
    first.temp.unlink()  # type: ignore[attr-defined]
    os.link(victim, first.temp)  # type: ignore[attr-defined]
    third = store.open_upload("model.bin", 10, 5, fingerprint="v1")
    try:
        assert third.finished_parts() == set()
    finally:
        third.abort()
    assert victim.read_bytes() == b"0123456789"


def test_local_source_link_out_of_its_root_is_refused(tmp_path: Path, source: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "token").write_text("agent-token")
    (source / "token").symlink_to(secrets / "token")
    target_dir = tmp_path / "dst"
    code, record = run_sync(str(source), str(target_dir))
    assert code == 3 and record["reason"] == "UnsafePath" and "outside the source" in str(record["message"]), record
    assert not (target_dir / "token").exists()

    # A directory link out of the root is refused the same way; a loop is refused, not walked forever.
    (source / "token").unlink()
    (source / "sub" / "more").symlink_to(secrets)
    with pytest.raises(UnsafePathError, match="outside the source"):
        local_sync(source, target_dir)
    (source / "sub" / "more").unlink()
    (source / "sub" / "loop").symlink_to("..")
    with pytest.raises(UnsafePathError, match="loop"):
        local_sync(source, target_dir)
    (source / "sub" / "loop").unlink()

    # Links that stay inside are followed; --follow-symlinks opts in to the rest (CLI only).
    (source / "alias.json").symlink_to("config.json")
    (source / "token").symlink_to(secrets / "token")
    code, record = run_sync(str(source), str(target_dir), "--follow-symlinks")
    assert code == 0, record
    assert (target_dir / "token").read_text() == "agent-token" and (
        target_dir / "alias.json"
    ).read_bytes() == b'{"a": 1}'


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


def test_hugging_face_cache_snapshot_links_to_blobs_still_work(tmp_path: Path, hub: FakeHub) -> None:
    from huggingface_hub import snapshot_download

    files = {"config.json": b'{"model_type": "llama"}', "model.safetensors": os.urandom(300_000)}
    files["nested/tokenizer.json"] = b'{"v": 1}'
    hub.add(HubRepo("org/model", files))
    cache = tmp_path / "hub-cache"
    snapshot = Path(snapshot_download("org/model", cache_dir=str(cache), endpoint=hub.url))
    assert snapshot.parent.name == "snapshots" and (snapshot / "config.json").is_symlink()  # the real layout
    assert (snapshot / "nested" / "tokenizer.json").resolve().parent.name == "blobs"
    target_dir = tmp_path / "dst"
    code, record = run_sync(str(snapshot), str(target_dir))
    assert code == 0, record
    for name, body in files.items():
        assert (target_dir / name).read_bytes() == body and not (target_dir / name).is_symlink()

    # The cache's blobs/ belong to this repository only: a link into another place is still refused.
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not a blob")
    (snapshot / "planted.txt").symlink_to(elsewhere)
    code, record = run_sync(str(snapshot), str(tmp_path / "dst2"))
    assert code == 3 and record["reason"] == "UnsafePath", record


def test_300_character_file_name_fails_as_unsafe_path(tmp_path: Path) -> None:
    long_name = "w" * 300 + ".bin"
    store = open_store(parse_uri(str(tmp_path / "bucket")), Credentials())
    store.put_bytes("config.json", b"{}")
    # A listing (a bucket, a Hub repository) can hold a key no local filesystem can name.
    from modelferry.storage.base import ObjectInfo
    from modelferry.transfer.plan import PlanOptions, make_plan

    with pytest.raises(UnsafePathError, match="255"):
        make_plan([ObjectInfo(path=f"dir/{long_name}", size=1)], {}, options=PlanOptions())
    make_plan([ObjectInfo(path=f"dir/{long_name}", size=1)], {}, options=PlanOptions(target_is_local=False))
    with pytest.raises(UnsafePathError):
        store.put_bytes(long_name, b"x")  # and the filesystem's own refusal is UnsafePath, not Failed


def test_file_names_with_control_characters_or_undecodable_bytes_are_refused(tmp_path: Path) -> None:
    for raw in (b"a\nforged log line.bin", b"\xff\xfe.bin"):
        src = tmp_path / "src"
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir()
        with open(os.path.join(os.fsencode(src), raw), "wb") as fh:
            fh.write(b"x")
        code, record = run_sync(str(src), str(tmp_path / "dst"))
        assert code == 3 and record["reason"] == "UnsafePath", record
        assert "\n" not in str(record["message"]).replace("\\n", "")
