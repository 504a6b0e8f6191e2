"""What the source and the target hold, streamed into a sync's :class:`TreeIndex` as it pages in.

Listings and manifests never sit in memory whole: each listing is consumed as the store yields
it (a page at a time), and a manifest is parsed entry by entry as its bytes arrive.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from modelferry.errors import AccessDeniedError, NotFoundError, PermanentError
from modelferry.storage.base import MANIFEST_NAME, ObjectInfo, Store
from modelferry.transfer.index import TreeIndex, info_row, record_row
from modelferry.transfer.manifest import SPOOL_PART, iter_manifest
from modelferry.transfer.plan import Plan, PlanOptions, SyncOptions, add_source, decide_all

log = logging.getLogger(__name__)


class ManifestSeen:
    """Remembers the manifest's own listing entry while a listing streams past."""

    def __init__(self) -> None:
        self.info: ObjectInfo | None = None

    def watch(self, listing: Iterator[ObjectInfo]) -> Iterator[ObjectInfo]:
        for info in listing:
            if info.path == MANIFEST_NAME:
                self.info = info
            yield info


def load_manifest(store: Store, seen: ObjectInfo | None, index: TreeIndex, table: str) -> bool:
    """Index ``store``'s manifest into ``table``; True when the store has a manifest file.

    An unreadable manifest leaves ``table`` empty (every file is verified again) but counts as there.

    Local stores leave ``.modelferry/`` out of their listings: they are asked with a ``stat``;
    stores that cannot ``stat`` cheaply answer through their own ``read_bytes``. A manifest larger
    than :data:`SPOOL_PART` is streamed in ranges, never held whole.
    """
    where = store.describe(MANIFEST_NAME)
    if seen is None and store.features.random_write:
        seen = store.stat(MANIFEST_NAME)
    chunks: Iterable[bytes]
    if seen is not None and seen.size > SPOOL_PART:
        chunks = _reading(store.read(MANIFEST_NAME, 0, seen.size, info=seen))
    else:
        data = store.read_bytes(MANIFEST_NAME)
        if data is None:
            return False
        chunks = [data]
    try:
        index.insert(table, (record_row(e) for e in iter_manifest(chunks, {}, where=where)), unique=False)
    except _ReadFailed as exc:
        index.clear(table)
        cause = exc.__cause__
        if isinstance(cause, NotFoundError):
            return False  # removed since the listing
        assert cause is not None
        raise cause from None
    except PermanentError as exc:
        log.info("%s is unreadable (%s): every file is verified again", where, exc.message)
        index.clear(table)
    return True


class _ReadFailed(Exception):
    """The store failed while a manifest streamed in (its error is the cause): not a parse error."""


def _reading(chunks: Iterable[bytes]) -> Iterator[bytes]:
    try:
        yield from chunks
    except Exception as exc:
        raise _ReadFailed() from exc


def index_target(target: Store, index: TreeIndex, dry_run: bool) -> bool:
    """List the target and read its manifest into ``index``; True when it has a manifest file.

    A dry run without the target's credentials plans every file as a copy.
    """
    try:
        target.resolve()
        seen = ManifestSeen()
        index.insert("tgt", (info_row(i) for i in seen.watch(target.list())), unique=False)
        return load_manifest(target, seen.info, index, "tman")
    except AccessDeniedError as exc:
        if not dry_run:
            raise
        log.warning(
            "dry run: the target could not be read (%s); every file is planned as a copy. Give the target's "
            "credentials to see what it already holds",
            exc.message,
        )
        index.clear("tgt")
        index.clear("tman")
        return False


def build_plan(
    source: Store, target: Store, index: TreeIndex, options: SyncOptions, plan_options: PlanOptions
) -> tuple[Plan, bool]:
    """List both sides into ``index`` and decide every file; also whether the target has a manifest file."""
    source.resolve()
    describe = source.describe()
    seen = ManifestSeen()
    add_source(index, seen.watch(source.list()), plan_options, describe)
    load_manifest(source, seen.info, index, "sman")
    target_manifest = index_target(target, index, options.dry_run)
    return decide_all(index, plan_options, describe), target_manifest
