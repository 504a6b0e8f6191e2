"""Turn ``PATH_OR_URI`` (+ ``--output`` / ``--in-place``) into (source, sink) pairs, one per file.

A local path or ``file://`` URI is read and written directly (temp file + rename
beside the final name). Any other URI goes through :func:`modelferry.storage.open_store`:
a prefix means every object under it; a URI naming one object is resolved by
looking it up in its parent prefix.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from modelferry.enigma.streams import LocalSink, LocalSource, Sink, Source, StoreSink, StoreSource
from modelferry.errors import NotFoundError, UsageError
from modelferry.settings import SyncSettings
from modelferry.storage import open_store
from modelferry.storage.base import MANIFEST_DIR, Store
from modelferry.storage.nofollow import opened_root
from modelferry.storage.tempfiles import is_temp_path, sweep, sweep_tree
from modelferry.uri import StorageURI, parse_uri, safe_relpath


@dataclass
class WorkItem:
    """One file: where to read it, how to make its output."""

    relpath: str
    source: Source
    make_sink: Callable[[int], Sink]


@dataclass
class Location:
    """A local directory/file or a store prefix/object."""

    uri: StorageURI
    local: Path | None = None
    store: Store | None = None
    single: str | None = None  # the one object's name when the URI names a file in a store
    _opened: list[Store] = field(default_factory=list)

    def close(self) -> None:
        for store in self._opened:
            with contextlib.suppress(Exception):
                store.close()


def _is_local(uri: StorageURI) -> bool:
    return uri.scheme == "file"


def open_location(raw: str, settings: SyncSettings, *, side: str) -> Location:
    uri = parse_uri(raw)
    if _is_local(uri):
        return Location(uri, local=Path(uri.path))
    creds = settings.source if side == "source" else settings.target
    store = open_store(uri, creds, settings=settings)
    loc = Location(uri, store=store, _opened=[store])
    return loc


def _skip(relpath: str) -> bool:
    return relpath.startswith(MANIFEST_DIR + "/") or is_temp_path(relpath)


def sweep_local(loc: Location) -> None:
    """Remove temp files that killed runs left where this run reads or writes (never a live run's)."""
    if loc.local is None:
        return
    directory = loc.local if loc.local.is_dir() else loc.local.parent
    with contextlib.suppress(OSError), opened_root(directory, create=False) as fd:
        (sweep_tree if loc.local.is_dir() else sweep)(fd, str(directory))


def _local_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Regular files below ``root``; links (to files or directories) are neither followed nor processed."""
    if root.is_file():
        yield root.name, root
        return
    if not root.is_dir():
        raise NotFoundError(f"{root} does not exist", obj=str(root))
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                rel = path.relative_to(root).as_posix()
                if not _skip(rel):
                    found.append((rel, path))
    yield from sorted(found)


def _store_sources(loc: Location, settings: SyncSettings) -> Iterator[tuple[str, Source]]:
    assert loc.store is not None
    found = False
    for info in sorted(loc.store.list(), key=lambda i: i.path):
        if _skip(info.path):
            continue
        found = True
        yield info.path, StoreSource(loc.store, info)
    if found:
        return
    # Maybe the URI names one object: look it up in its parent prefix.
    raw = str(loc.uri).rstrip("/")
    parent_raw, _, name = raw.rpartition("/")
    if name and "/" in parent_raw:
        parent = open_store(parse_uri(parent_raw), settings.source, settings=settings)
        loc._opened.append(parent)
        one = parent.stat(name)
        if one is not None:
            loc.store, loc.single = parent, name
            yield name, StoreSource(parent, one)
            return
    raise NotFoundError(f"nothing to process at {loc.uri}", obj=str(loc.uri))


def work_items(
    source: Location,
    output: Location | None,
    settings: SyncSettings,
    *,
    need_output: bool = True,
) -> Iterator[WorkItem]:
    """Every file under ``source`` with a sink at ``output`` (or in place when ``output`` is None)."""
    single_local = source.local is not None and source.local.is_file()
    if source.local is not None:
        pairs: Iterator[tuple[str, Source]] = ((rel, LocalSource(path)) for rel, path in _local_files(source.local))
    else:
        pairs = _store_sources(source, settings)
    for rel, src in pairs:
        safe_relpath(rel, obj=src.describe)
        single = single_local or source.single is not None
        yield WorkItem(rel, src, _sink_factory(source, output, rel, src, single) if need_output else _no_sink)


def _no_sink(_size: int) -> Sink:
    raise UsageError("this operation writes nothing")


def _sink_factory(
    source: Location, output: Location | None, rel: str, src: Source, single: bool
) -> Callable[[int], Sink]:
    written_to = output or source
    mode = src.mode if src.mode is not None else 0o644
    if written_to.local is not None:
        if output is None:
            final = source.local if single and source.local is not None else written_to.local / rel
        elif single and not (written_to.local.is_dir() or str(written_to.uri.raw).endswith("/")):
            final = written_to.local
        else:
            final = written_to.local / rel
        assert final is not None
        return lambda _size: LocalSink(final, mode)
    store = written_to.store
    assert store is not None
    if output is None and source.single is not None:
        name = source.single
    elif single and output is not None and not str(output.uri.raw).endswith("/"):
        # s3://b/dir/file.bin as output of one file: write to its parent under that name.
        raise UsageError(
            "for a single file, give an output prefix ending in '/' for object stores",
            obj=str(output.uri),
            hint="e.g. --output s3://bucket/models/",
        )
    else:
        name = rel
    return lambda size: StoreSink(store, name, size)
