"""``sync()``: plan, check, run the engine, write the manifest last."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from modelferry.settings import TransferSettings
from modelferry.storage.base import MANIFEST_NAME, Store
from modelferry.transfer.checks import resolve_checks
from modelferry.transfer.engine import Engine
from modelferry.transfer.manifest import Manifest, ManifestEntry, remove_manifest, write_manifest
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

    def to_dict(self) -> dict[str, Any]:
        rate = self.bytes_copied / self.elapsed_s if self.elapsed_s > 0 else 0.0
        out: dict[str, Any] = {
            "status": "planned" if self.dry_run else "complete",
            "source": self.source,
            "target": self.target,
            "revision": self.revision,
            "files": len(self.plan.items),
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
            out["plan"] = self.plan.to_dict()
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
    plan, old_manifest = engine.plan(options)
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
    copies = plan.of(Action.COPY)
    # Withdraw the completion marker before any file changes; an unreadable one (read as None) too.
    if copies and (old_manifest is not None or target.read_bytes(MANIFEST_NAME) is not None):
        remove_manifest(target)
    entries = engine.run(plan)
    manifest = Manifest(source=str(source.uri), revision=source.revision)
    previous = old_manifest.by_path() if old_manifest else {}
    for item in plan.items:
        if item.source.path in entries:
            manifest.files.append(entries[item.source.path])
            continue
        old = previous.get(item.source.path)
        tgt = engine.target_files.get(item.source.path)
        manifest.files.append(
            ManifestEntry(
                path=item.source.path,
                size=item.source.size,
                sha256=item.known_sha256 or item.source.sha256,
                etag=tgt.etag if tgt else (old.etag if old else None),
                source_etag=item.source.etag,
                part_size=old.part_size if old else None,
                mtime_ns=tgt.mtime_ns if tgt else None,
            )
        )
    write_manifest(target, manifest)
    # Partials of files outside this plan (other filters, files gone) would otherwise pile up.
    target.cleanup_partials(keep=[i.source.path for i in plan.items], older_than=started_wall)
    counters = engine.progress.counters
    result.files_copied = len(entries)
    result.bytes_copied = sum(e.size for e in entries.values())
    result.files_skipped = len(plan.items) - len(entries)
    result.bytes_skipped = plan.total_bytes - result.bytes_copied
    result.bytes_transferred = counters.bytes_transferred
    result.retries = counters.retries
    result.refetched = engine.refetched
    result.manifest = manifest
    result.elapsed_s = time.monotonic() - started
    return result
