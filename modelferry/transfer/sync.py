"""``sync()``: plan, check, run the engine, write the manifest last."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from modelferry.settings import TransferSettings
from modelferry.storage.base import Store
from modelferry.transfer.checks import resolve_checks
from modelferry.transfer.engine import Engine
from modelferry.transfer.index import RECORD_COLS, TreeIndex, row_record
from modelferry.transfer.manifest import Manifest, ManifestEntry, remove_manifest, write_manifest_entries
from modelferry.transfer.plan import Action, Plan, SyncOptions
from modelferry.transfer.progress import Progress


@dataclass
class SyncResult:
    source: str
    target: str
    revision: str | None
    plan: Plan
    dry_run: bool = False
    files_copied: int = 0
    bytes_copied: int = 0
    files_skipped: int = 0
    bytes_skipped: int = 0
    bytes_transferred: int = 0
    retries: int = 0
    refetched: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    manifest: Manifest | None = None

    def to_dict(self, *, plan_items: bool = True) -> dict[str, Any]:
        rate = self.bytes_copied / self.elapsed_s if self.elapsed_s > 0 else 0.0
        out: dict[str, Any] = {
            "status": "planned" if self.dry_run else "complete",
            "source": self.source,
            "target": self.target,
            "revision": self.revision,
            "files": self.plan.count(),
            "bytes": self.plan.total_bytes,
            "files_copied": self.files_copied,
            "bytes_copied": self.bytes_copied,
            "files_skipped": self.files_skipped,
            "bytes_skipped": self.bytes_skipped,
            "bytes_transferred": self.bytes_transferred,
            "retries": self.retries,
            "refetched": self.refetched,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_mb_s": round(rate / 1e6, 2),
        }
        if self.dry_run:
            out["plan"] = self.plan.to_dict(items=plan_items)
        return out


def sync(
    source: Store,
    target: Store,
    settings: TransferSettings,
    options: SyncOptions | None = None,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> SyncResult:
    """Plan and run one sync; the manifest is written last."""
    options = options or SyncOptions()
    started = time.monotonic()
    started_wall = time.time()
    engine = Engine(source, target, settings, progress=progress, cancel=cancel)
    plan, had_manifest = engine.plan(options)
    result = SyncResult(
        source=str(source.uri),
        target=str(target.uri),
        revision=source.revision,
        plan=plan,
        dry_run=options.dry_run,
    )
    if options.dry_run:
        result.elapsed_s = time.monotonic() - started
        return result
    engine.check_space(plan)
    plan = resolve_checks(plan, source, target, workers=settings.concurrency, cancel=engine.cancel)
    result.plan = plan
    # Withdraw the completion marker before any file changes; an unreadable one too.
    if had_manifest and plan.count(Action.COPY):
        remove_manifest(target)
    engine.run(plan)
    header = Manifest(source=str(source.uri), revision=source.revision).header()
    kept: list[ManifestEntry] | None = [] if plan.count() <= SMALL_MANIFEST else None
    written = manifest_entries(plan.index)
    write_manifest_entries(target, header, keeping(written, kept), total_size=plan.total_bytes)
    # Partials of files outside this plan (other filters, files gone) would otherwise pile up.
    target.cleanup_partials(keep=plan.paths(), older_than=started_wall)
    counters = engine.progress.counters
    result.files_copied = engine.copied_files
    result.bytes_copied = engine.copied_bytes
    result.files_skipped = plan.count() - engine.copied_files
    result.bytes_skipped = plan.total_bytes - result.bytes_copied
    result.bytes_transferred = counters.bytes_transferred
    result.retries = counters.retries
    result.refetched = engine.refetched
    if kept is not None:  # small trees: callers and tests look at the entries
        result.manifest = Manifest(
            source=str(header["source"]), revision=header["revision"], files=kept, completed=str(header["completed"])
        )
    result.elapsed_s = time.monotonic() - started
    return result


SMALL_MANIFEST = 10_000  # results carry the manifest's entries only for trees up to this many files

_DONE = ", ".join(f"done.{c}" for c in RECORD_COLS)
MANIFEST_ROWS = (
    f"SELECT plan.path, plan.size, plan.sha256, plan.known_sha256, plan.etag, {_DONE}, "  # noqa: S608 - fixed names
    "tgt.path, tgt.etag, tgt.mtime_ns, tman.etag, tman.part_size FROM plan "
    "LEFT JOIN done ON done.path = plan.path LEFT JOIN tgt ON tgt.path = plan.path "
    "LEFT JOIN tman ON tman.path = plan.path WHERE plan.path > ? ORDER BY plan.path LIMIT ?"
)


def manifest_entries(index: TreeIndex) -> Iterator[ManifestEntry]:
    """Every planned file's manifest entry, sorted by path: what the engine placed, else what was there."""
    width = len(RECORD_COLS)
    for row in index.rows(MANIFEST_ROWS, key=0):
        path, size, sha256, known, source_etag = row[:5]
        done = row[5 : 5 + width]
        if done[0] is not None:
            yield row_record(done)
            continue
        tgt_path, tgt_etag, tgt_mtime, old_etag, old_part_size = row[5 + width :]
        yield ManifestEntry(
            path=path,
            size=size,
            sha256=known or sha256,
            etag=tgt_etag if tgt_path is not None else old_etag,
            source_etag=source_etag,
            part_size=old_part_size,
            mtime_ns=tgt_mtime,
        )


def keeping(entries: Iterator[ManifestEntry], kept: list[ManifestEntry] | None) -> Iterator[ManifestEntry]:
    """``entries``, also appended to ``kept`` when it is a list."""
    for entry in entries:
        if kept is not None:
            kept.append(entry)
        yield entry
