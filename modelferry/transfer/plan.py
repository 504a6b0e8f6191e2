"""Planning: a pure function from listings to the work to do.

No I/O here: the engine lists the source and target, reads manifests, and hands
plain data to :func:`make_plan`. Files whose fate depends on bytes only the
target holds (a local file of the right size with no trustworthy record) come
back as ``check``: the engine hashes them and decides.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from modelferry.checksums import clean_etag
from modelferry.errors import NotFoundError, SizeLimitError, UnsafePathError, UsageError
from modelferry.storage.base import MANIFEST_DIR, ObjectInfo
from modelferry.storage.tempfiles import is_temp_path
from modelferry.transfer.manifest import ManifestEntry
from modelferry.transfer.verify import Expectation
from modelferry.uri import safe_relpath


class Action(StrEnum):
    COPY = "copy"
    SKIP = "skip"
    CHECK = "check"


@dataclass(frozen=True, slots=True)
class PlanItem:
    source: ObjectInfo
    action: Action
    reason: str
    expected: Expectation
    known_sha256: str | None = None  # for skipped files: the sha256 we can vouch for
    check_source: bool = False  # CHECK by hashing the (local) source instead of the target


@dataclass
class Plan:
    items: list[PlanItem] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    def of(self, action: Action) -> list[PlanItem]:
        return [i for i in self.items if i.action == action]

    @property
    def total_bytes(self) -> int:
        return sum(i.source.size for i in self.items)

    @property
    def copy_bytes(self) -> int:
        return sum(i.source.size for i in self.items if i.action != Action.SKIP)

    def to_dict(self) -> dict[str, object]:
        return {
            "files": len(self.items),
            "bytes": self.total_bytes,
            "copy_files": len(self.of(Action.COPY)) + len(self.of(Action.CHECK)),
            "copy_bytes": self.copy_bytes,
            "skip_files": len(self.of(Action.SKIP)),
            "excluded": len(self.excluded),
            "items": [
                {
                    "path": i.source.path,
                    "size": i.source.size,
                    "action": str(i.action),
                    "reason": i.reason,
                    "verify": i.expected.strength,
                }
                for i in self.items
            ],
        }


@dataclass(frozen=True)
class SyncOptions:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    dry_run: bool = False


@dataclass(frozen=True)
class PlanOptions:
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    size_limit: int | None = None
    trust_size: bool = False
    target_is_local: bool = True
    source_is_local: bool = False


def _match(path: str, pattern: str) -> bool:
    # Same semantics as huggingface_hub's allow/ignore patterns: "dir/" means everything below.
    if pattern.endswith("/"):
        pattern += "*"
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern.lstrip("./"))


def select(
    paths: Iterable[ObjectInfo], include: Sequence[str], exclude: Sequence[str]
) -> tuple[list[ObjectInfo], list[str]]:
    """Apply include/exclude globs; our own ``.modelferry/`` and temp files of interrupted runs are never copied."""
    kept: list[ObjectInfo] = []
    dropped: list[str] = []
    for info in paths:
        if info.path == MANIFEST_DIR or info.path.startswith(MANIFEST_DIR + "/") or is_temp_path(info.path):
            continue
        if (include and not any(_match(info.path, p) for p in include)) or any(_match(info.path, p) for p in exclude):
            dropped.append(info.path)
            continue
        kept.append(info)
    return kept, dropped


def enrich(info: ObjectInfo, source_manifest: Mapping[str, ManifestEntry]) -> ObjectInfo:
    """Borrow sha256 and part size from the source's own manifest when it still describes the object."""
    entry = source_manifest.get(info.path)
    if entry is None or entry.size != info.size:
        return info
    etag_ok = entry.etag is None or clean_etag(entry.etag) == clean_etag(info.etag) or info.etag is None
    if not etag_ok:
        return info
    return ObjectInfo(
        path=info.path,
        size=info.size,
        sha256=info.sha256 or entry.sha256,
        md5=info.md5,
        etag=info.etag,
        part_size=info.part_size or entry.part_size,
        git_sha1=info.git_sha1,
        version=info.version,
    )


def decide(src: ObjectInfo, tgt: ObjectInfo | None, record: ManifestEntry | None, opts: PlanOptions) -> PlanItem:
    """What to do with one file."""
    expected = Expectation.for_object(src)
    if tgt is None:
        return PlanItem(src, Action.COPY, "missing at target", expected)
    if tgt.size != src.size:
        return PlanItem(src, Action.COPY, f"size differs ({tgt.size} != {src.size})", expected)
    known = record.sha256 if record and record.size == src.size else None
    if opts.trust_size:
        return PlanItem(src, Action.SKIP, "same size (--trust-size)", expected, known_sha256=known)
    if record is not None and record.size == src.size:
        same_content = (src.sha256 and record.sha256 == src.sha256.lower()) or (
            src.etag and record.source_etag and clean_etag(record.source_etag) == clean_etag(src.etag)
        )
        untouched = (
            (record.mtime_ns is not None and record.mtime_ns == tgt_mtime(tgt))
            if opts.target_is_local
            else (record.etag is not None and clean_etag(record.etag) == clean_etag(tgt.etag))
        )
        if same_content and untouched:
            return PlanItem(src, Action.SKIP, "unchanged (manifest)", expected, known_sha256=record.sha256)
        if untouched and record.sha256 and opts.source_is_local and expected.strength == "size":
            # A local source has no stored checksum: hash it and compare with what the target recorded.
            return PlanItem(
                src,
                Action.CHECK,
                "hash the local source against the target manifest",
                Expectation(sha256=record.sha256),
                check_source=True,
            )
    if not opts.target_is_local:
        s_md5 = expected.md5
        t_md5 = Expectation.for_object(tgt).md5
        if s_md5 and t_md5 and s_md5 == t_md5:
            return PlanItem(src, Action.SKIP, "same md5", expected, known_sha256=known)
        return PlanItem(src, Action.COPY, "target content unproven", expected)
    if expected.strength == "size":
        return PlanItem(src, Action.COPY, "source offers no checksum to compare", expected)
    return PlanItem(src, Action.CHECK, "same size: hash the target copy", expected)


def tgt_mtime(info: ObjectInfo) -> int | None:
    return info.mtime_ns


NAME_MAX = 255  # bytes per path component on Linux filesystems


def check_local_name(path: str, *, obj: str) -> None:
    """Refuse a name a local filesystem cannot hold, before any byte is fetched."""
    for part in path.split("/"):
        size = len(part.encode("utf-8", "surrogateescape"))
        if size > NAME_MAX:
            raise UnsafePathError(
                f"file name {part[:40]!r}... is {size} bytes long; a local filesystem allows {NAME_MAX}",
                obj=obj,
                hint="Exclude it with --exclude, or rename it at the source",
            )


def make_plan(
    source: Iterable[ObjectInfo],
    target: Mapping[str, ObjectInfo],
    *,
    options: PlanOptions,
    target_manifest: Mapping[str, ManifestEntry] | None = None,
    source_manifest: Mapping[str, ManifestEntry] | None = None,
    describe_source: str = "source",
) -> Plan:
    """Filter, check names and the size limit, and decide each file."""
    kept, dropped = select(source, options.include, options.exclude)
    items: list[PlanItem] = []
    seen: set[str] = set()
    for info in sorted(kept, key=lambda i: (-i.size, i.path)):
        safe_relpath(info.path, obj=f"{describe_source}/{info.path}")
        if options.target_is_local:
            check_local_name(info.path, obj=f"{describe_source}/{info.path}")
        if info.path in seen:
            raise UsageError(f"duplicate file name {info.path!r} in the source listing", obj=describe_source)
        seen.add(info.path)
        src = enrich(info, source_manifest or {})
        items.append(decide(src, target.get(info.path), (target_manifest or {}).get(info.path), options))
    plan = Plan(items=items, excluded=dropped)
    if options.size_limit is not None and plan.total_bytes > options.size_limit:
        raise SizeLimitError(
            f"the source holds {plan.total_bytes} bytes, over the size limit of {options.size_limit} bytes",
            obj=describe_source,
            hint="Narrow it with --include/--exclude, raise --size-limit, or pass --size-limit 0 to switch the check off",
        )
    if not items:
        raise NotFoundError(
            f"nothing to copy: {describe_source} lists no files" + (" after filtering" if dropped else ""),
            obj=describe_source,
            hint="Check the URI's prefix and the --include/--exclude patterns",
        )
    return plan
