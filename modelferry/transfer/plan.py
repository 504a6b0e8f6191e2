"""Planning: a pure function from listings to the work to do.

No network I/O here: the engine lists the source and target, reads manifests, and
streams them into a :class:`~modelferry.transfer.index.TreeIndex`; :func:`decide`
is a pure function of one file's rows. Files whose fate depends on bytes only the
target holds (a local file of the right size with no trustworthy record) come
back as ``check``: the engine hashes them and decides.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from modelferry.checksums import clean_etag
from modelferry.errors import NotFoundError, SizeLimitError, UnsafePathError, UsageError
from modelferry.storage.base import MANIFEST_DIR, ObjectInfo
from modelferry.storage.tempfiles import is_temp_path
from modelferry.transfer.index import (
    INFO_COLS,
    PLAN_COLS,
    RECORD_COLS,
    DuplicatePath,
    TreeIndex,
    info_row,
    record_row,
    row_info,
    row_record,
)
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


class Plan:
    """The decisions of one sync, kept in its :class:`TreeIndex` (read back in plan order, a batch at a time)."""

    def __init__(self, index: TreeIndex) -> None:
        self.index = index

    def close(self) -> None:
        self.index.close()

    def __iter__(self) -> Iterator[PlanItem]:
        return self._select("")

    def of(self, action: Action) -> Iterator[PlanItem]:
        return self._select("action = ? AND", action.value)

    def _select(self, where: str, *args: object) -> Iterator[PlanItem]:
        cols = ", ".join(PLAN_COLS)
        sql = f"SELECT seq, {cols} FROM plan WHERE {where} seq > ? ORDER BY seq LIMIT ?"  # noqa: S608
        for row in self.index.rows(sql, *args):
            yield plan_item(row[1:])

    @property
    def items(self) -> list[PlanItem]:
        """Every item in a list: for small plans (tests, printing); large ones iterate the plan."""
        return list(self)

    def count(self, action: Action | None = None) -> int:
        if action is None:
            return self.index.count("plan")
        return int(self.index.scalar("SELECT COUNT(*) FROM plan WHERE action = ?", action.value))

    @property
    def total_bytes(self) -> int:
        return int(self.index.scalar("SELECT COALESCE(SUM(size), 0) FROM plan"))

    @property
    def copy_bytes(self) -> int:
        return int(self.index.scalar("SELECT COALESCE(SUM(size), 0) FROM plan WHERE action != ?", Action.SKIP.value))

    def bytes_of(self, action: Action) -> int:
        return int(self.index.scalar("SELECT COALESCE(SUM(size), 0) FROM plan WHERE action = ?", action.value))

    def paths(self) -> Iterator[str]:
        """Every planned path (streamed)."""
        for row in self.index.rows("SELECT path FROM plan WHERE path > ? ORDER BY path LIMIT ?"):
            yield row[0]

    @property
    def excluded(self) -> int:
        return self.index.count("excluded")

    def replace(self, items: Iterable[PlanItem]) -> None:
        """Store new decisions for these files (checks resolved)."""
        self.index.update_plan((*plan_row(i)[len(INFO_COLS) :], i.source.path) for i in items)

    def to_dict(self, *, items: bool = True) -> dict[str, object]:
        out: dict[str, object] = {
            "files": self.count(),
            "bytes": self.total_bytes,
            "copy_files": self.count(Action.COPY) + self.count(Action.CHECK),
            "copy_bytes": self.copy_bytes,
            "skip_files": self.count(Action.SKIP),
            "excluded": self.excluded,
        }
        if items:
            out["items"] = list(self.item_dicts())
        return out

    def item_dicts(self) -> Iterator[dict[str, object]]:
        """Each item as the JSON summary shows it, read from the index a batch at a time."""
        for i in self:
            yield {
                "path": i.source.path,
                "size": i.source.size,
                "action": str(i.action),
                "reason": i.reason,
                "verify": i.expected.strength,
            }


def plan_row(item: PlanItem) -> tuple[object, ...]:
    e = item.expected
    return (
        *info_row(item.source),
        item.action.value,
        item.reason,
        item.known_sha256,
        int(item.check_source),
        e.sha256,
        e.git_sha1,
        e.md5,
        e.multipart_etag,
        e.part_size,
    )


def plan_item(row: Sequence[Any]) -> PlanItem:
    n = len(INFO_COLS)
    action, reason, known, check_source, *expect = row[n:]
    return PlanItem(row_info(tuple(row)), Action(action), reason, Expectation(*expect), known, bool(check_source))


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


def wanted(info: ObjectInfo, include: Sequence[str], exclude: Sequence[str]) -> bool | None:
    """True to keep, False when the filters drop it, None for our own files (never copied, never reported)."""
    if info.path == MANIFEST_DIR or info.path.startswith(MANIFEST_DIR + "/") or is_temp_path(info.path):
        return None
    return not (
        (include and not any(_match(info.path, p) for p in include)) or any(_match(info.path, p) for p in exclude)
    )


def select(
    paths: Iterable[ObjectInfo], include: Sequence[str], exclude: Sequence[str]
) -> tuple[list[ObjectInfo], list[str]]:
    """Apply include/exclude globs; our own ``.modelferry/`` and temp files of interrupted runs are never copied."""
    kept: list[ObjectInfo] = []
    dropped: list[str] = []
    for info in paths:
        keep = wanted(info, include, exclude)
        if keep:
            kept.append(info)
        elif keep is False:
            dropped.append(info.path)
    return kept, dropped


def enrich(info: ObjectInfo, source_manifest: Mapping[str, ManifestEntry]) -> ObjectInfo:
    """Borrow sha256 and part size from the source's own manifest when it still describes the object."""
    return enrich_with(info, source_manifest.get(info.path))


def enrich_with(info: ObjectInfo, entry: ManifestEntry | None) -> ObjectInfo:
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


def add_source(index: TreeIndex, source: Iterable[ObjectInfo], options: PlanOptions, describe_source: str) -> None:
    """Filter the source listing as it streams in and index what is kept (names checked, duplicates refused)."""
    dropped: list[str] = []

    def kept() -> Iterator[tuple[object, ...]]:
        for info in source:
            keep = wanted(info, options.include, options.exclude)
            if keep is None:
                continue
            if not keep:
                dropped.append(info.path)
                if len(dropped) >= 1000:
                    index.exclude(dropped)
                    dropped.clear()
                continue
            safe_relpath(info.path, obj=f"{describe_source}/{info.path}")
            if options.target_is_local:
                check_local_name(info.path, obj=f"{describe_source}/{info.path}")
            yield info_row(info)

    try:
        index.insert("src", kept())
    except DuplicatePath as exc:
        raise UsageError(f"duplicate file name {exc.args[0]!r} in the source listing", obj=describe_source) from exc
    index.exclude(dropped)


def decide_all(index: TreeIndex, options: PlanOptions, describe_source: str) -> Plan:
    """Decide every indexed source file against the indexed target and manifests, largest files first."""
    total = int(index.scalar("SELECT COALESCE(SUM(size), 0) FROM src"))
    if options.size_limit is not None and total > options.size_limit:
        raise SizeLimitError(
            f"the source holds {total} bytes, over the size limit of {options.size_limit} bytes",
            obj=describe_source,
            hint="Narrow it with --include/--exclude, raise --size-limit, or pass --size-limit 0 to switch the check off",
        )
    if not index.count("src"):
        raise NotFoundError(
            f"nothing to copy: {describe_source} lists no files"
            + (" after filtering" if index.count("excluded") else ""),
            obj=describe_source,
            hint="Check the URI's prefix and the --include/--exclude patterns",
        )
    width, rec = len(INFO_COLS), len(RECORD_COLS)

    def decided(rows: Iterator[tuple[object, ...]]) -> Iterator[tuple[object, ...]]:
        for row in rows:
            src = row_info(row[:width])
            tgt = row_info(row[width : 2 * width]) if row[width] is not None else None
            rec_t = row[2 * width : 2 * width + rec]
            rec_s = row[2 * width + rec :]
            record = row_record(rec_t) if rec_t[0] is not None else None
            src = enrich_with(src, row_record(rec_s) if rec_s[0] is not None else None)
            yield plan_row(decide(src, tgt, record, options))

    index.derive(
        "SELECT src.*, tgt.*, tman.*, sman.* FROM src LEFT JOIN tgt USING (path) LEFT JOIN tman USING (path) "
        "LEFT JOIN sman USING (path) ORDER BY src.size DESC, src.path",
        decided,
    )
    return Plan(index)


def make_plan(
    source: Iterable[ObjectInfo],
    target: Mapping[str, ObjectInfo],
    *,
    options: PlanOptions,
    target_manifest: Mapping[str, ManifestEntry] | None = None,
    source_manifest: Mapping[str, ManifestEntry] | None = None,
    describe_source: str = "source",
) -> Plan:
    """Filter, check names and the size limit, and decide each file (in-memory inputs; the engine streams)."""
    index = TreeIndex()
    try:
        index.insert("tgt", (info_row(i) for i in target.values()), unique=False)
        index.insert("tman", (record_row(e) for e in (target_manifest or {}).values()), unique=False)
        index.insert("sman", (record_row(e) for e in (source_manifest or {}).values()), unique=False)
        add_source(index, source, options, describe_source)
        return decide_all(index, options, describe_source)
    except BaseException:
        index.close()
        raise
