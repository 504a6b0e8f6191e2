"""Planning decisions: a pure function from listings to work."""

from __future__ import annotations

import pytest

from modelferry.errors import NotFoundError, SizeLimitError, UnsafePathError, UsageError
from modelferry.storage.base import ObjectInfo
from modelferry.transfer.manifest import ManifestEntry
from modelferry.transfer.plan import Action, PlanOptions, decide, enrich, make_plan, select

SHA = "a" * 64
LOCAL = PlanOptions(target_is_local=True)
BUCKET = PlanOptions(target_is_local=False)


def src(path: str = "w.bin", size: int = 10, **kw: object) -> ObjectInfo:
    return ObjectInfo(path=path, size=size, **kw)  # type: ignore[arg-type]


def test_missing_and_size_differs_copy() -> None:
    assert decide(src(sha256=SHA), None, None, LOCAL).action == Action.COPY
    item = decide(src(sha256=SHA), src(size=9), None, LOCAL)
    assert item.action == Action.COPY and "size differs" in item.reason


def test_manifest_vouches_only_while_the_local_file_is_untouched() -> None:
    record = ManifestEntry(path="w.bin", size=10, sha256=SHA, mtime_ns=5)
    same = decide(src(sha256=SHA), src(mtime_ns=5), record, LOCAL)
    assert same.action == Action.SKIP and same.known_sha256 == SHA
    touched = decide(src(sha256=SHA), src(mtime_ns=6), record, LOCAL)
    assert touched.action == Action.CHECK  # same size but edited: hash it, never trust size
    new_revision = decide(src(sha256="b" * 64), src(mtime_ns=5), record, LOCAL)
    assert new_revision.action == Action.CHECK


def test_size_alone_is_never_proof_unless_trusted() -> None:
    assert decide(src(), src(), None, LOCAL).action == Action.COPY  # no checksum at all: copy
    assert decide(src(git_sha1="c" * 40), src(), None, LOCAL).action == Action.CHECK
    trusted = decide(src(), src(), None, PlanOptions(trust_size=True))
    assert trusted.action == Action.SKIP


def test_bucket_targets_compare_md5_or_copy() -> None:
    assert decide(src(md5="d" * 32), src(etag="D" * 32), None, BUCKET).action == Action.SKIP
    assert decide(src(md5="d" * 32), src(etag="e" * 32), None, BUCKET).action == Action.COPY
    record = ManifestEntry(path="w.bin", size=10, sha256=SHA, etag="f" * 32)
    assert decide(src(sha256=SHA), src(etag='"' + "f" * 32 + '"'), record, BUCKET).action == Action.SKIP


def test_local_source_is_hashed_against_the_target_manifest() -> None:
    record = ManifestEntry(path="w.bin", size=10, sha256=SHA, etag="f" * 32)
    item = decide(src(), src(etag="f" * 32), record, PlanOptions(target_is_local=False, source_is_local=True))
    assert item.action == Action.CHECK and item.check_source and item.expected.sha256 == SHA


def test_select_globs_and_own_directory() -> None:
    files = [src(p) for p in ("a.json", "w/1.bin", "w/2.bin", ".modelferry/manifest.json", "b.txt")]
    kept, dropped = select(files, ["*.json", "w/"], ["w/2.bin"])
    assert [f.path for f in kept] == ["a.json", "w/1.bin"]
    assert sorted(dropped) == ["b.txt", "w/2.bin"]


def test_enrich_borrows_the_source_manifest_only_when_it_matches() -> None:
    entry = ManifestEntry(path="w.bin", size=10, sha256=SHA, etag="abc-2", part_size=8)
    assert enrich(src(etag="abc-2"), {"w.bin": entry}).sha256 == SHA
    assert enrich(src(etag="abc-2"), {"w.bin": entry}).part_size == 8
    assert enrich(src(etag="other"), {"w.bin": entry}).sha256 is None
    assert enrich(src(size=11, etag="abc-2"), {"w.bin": entry}).sha256 is None


def test_make_plan_orders_largest_first_and_counts() -> None:
    plan = make_plan([src("s", 1, sha256=SHA), src("l", 100, sha256=SHA)], {}, options=LOCAL)
    assert [i.source.path for i in plan.items] == ["l", "s"]
    assert plan.copy_bytes == 101 and plan.to_dict()["copy_files"] == 2


@pytest.mark.parametrize("name", ["../evil", "/abs", "a/../../b", "a\\b", "a//b"])
def test_make_plan_refuses_unsafe_names(name: str) -> None:
    with pytest.raises(UnsafePathError):
        make_plan([src(name)], {}, options=LOCAL)


def test_make_plan_limits_and_empty() -> None:
    with pytest.raises(SizeLimitError, match="size limit"):
        make_plan([src(size=100)], {}, options=PlanOptions(size_limit=99))
    make_plan([src(size=99)], {}, options=PlanOptions(size_limit=99))
    with pytest.raises(NotFoundError, match="after filtering"):
        make_plan([src("a.bin")], {}, options=PlanOptions(include=["*.json"]))
    with pytest.raises(UsageError, match="duplicate"):
        make_plan([src("a"), src("a")], {}, options=LOCAL)
