"""The packed, on-disk index behind a plan: listings, manifests, decisions and finished files.

A tree of a million files does not fit in memory as Python objects (about 2.4 KiB per file
for the listing, the sorted plan and the manifest entries), so a sync keeps them in one SQLite
database in a private temporary directory: rows go in as the listings page, the plan is read
back in its order (largest files first) in batches, and the manifest is written from a query
sorted by path. Python holds a few thousand rows at a time, whatever the tree's size.

Every method may be called from any thread; one lock serialises the connection.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from modelferry.storage.base import ObjectInfo
from modelferry.transfer.manifest import ManifestEntry

BATCH = 2000  # rows per insert and per read-back query

INFO_COLS = ("path", "size", "sha256", "md5", "etag", "part_size", "git_sha1", "version", "mtime_ns")
RECORD_COLS = ("path", "size", "sha256", "etag", "source_etag", "part_size", "mtime_ns")
EXPECT_COLS = ("x_sha256", "x_git_sha1", "x_md5", "x_multipart", "x_part_size")
PLAN_COLS = (*INFO_COLS, "action", "reason", "known_sha256", "check_source", *EXPECT_COLS)

_INFO = ", ".join(f"{c}{' TEXT PRIMARY KEY' if c == 'path' else ''}" for c in INFO_COLS)
_RECORD = ", ".join(f"{c}{' TEXT PRIMARY KEY' if c == 'path' else ''}" for c in RECORD_COLS)
_SCHEMA = f"""
CREATE TABLE src ({_INFO}) WITHOUT ROWID;
CREATE TABLE tgt ({_INFO}) WITHOUT ROWID;
CREATE TABLE tman ({_RECORD}) WITHOUT ROWID;
CREATE TABLE sman ({_RECORD}) WITHOUT ROWID;
CREATE TABLE done ({_RECORD}) WITHOUT ROWID;
CREATE TABLE plan (seq INTEGER PRIMARY KEY, {", ".join(PLAN_COLS)});
CREATE UNIQUE INDEX plan_path ON plan (path);
CREATE TABLE excluded (path TEXT);
"""
TABLES = ("src", "tgt", "tman", "sman", "done")


class DuplicatePath(Exception):
    """Two rows with one path went into a table that keys on it."""


def info_row(info: ObjectInfo) -> tuple[Any, ...]:
    return (
        info.path,
        info.size,
        info.sha256,
        info.md5,
        info.etag,
        info.part_size,
        info.git_sha1,
        info.version,
        info.mtime_ns,
    )


def row_info(row: tuple[Any, ...] | sqlite3.Row) -> ObjectInfo:
    return ObjectInfo(*row[: len(INFO_COLS)])


def record_row(entry: ManifestEntry) -> tuple[Any, ...]:
    return (entry.path, entry.size, entry.sha256, entry.etag, entry.source_etag, entry.part_size, entry.mtime_ns)


def row_record(row: tuple[Any, ...] | sqlite3.Row) -> ManifestEntry:
    return ManifestEntry(*row[: len(RECORD_COLS)])


class TreeIndex:
    """One sync's index. Close it (or use it as a context manager) to delete its files."""

    def __init__(self, directory: str | None = None) -> None:
        self._dir = tempfile.mkdtemp(prefix="modelferry-index-", dir=directory)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(Path(self._dir) / "index.db"), check_same_thread=False, isolation_level=None)
            for pragma in (
                "journal_mode=OFF",  # a scratch database: nothing to recover after a crash
                "synchronous=OFF",
                "locking_mode=EXCLUSIVE",  # private to this process: no file lock taken and dropped per statement
                "temp_store=FILE",  # sorts of large tables spill to disk, not to memory
                "cache_size=-8192",  # 8 MiB of page cache
            ):
                self._db.execute(f"PRAGMA {pragma}")
            self._db.executescript(_SCHEMA)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self._pending_done: list[tuple[Any, ...]] = []
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)

    def __enter__(self) -> TreeIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._finalizer()

    # -- writing -----------------------------------------------------------------------

    def insert(self, table: str, rows: Iterable[tuple[Any, ...]], *, unique: bool = True) -> int:
        """Add ``rows`` in batches; a repeated path raises :class:`DuplicatePath` (``unique``) or replaces."""
        assert table in TABLES
        width = len(INFO_COLS) if table in ("src", "tgt") else len(RECORD_COLS)
        verb = "INSERT" if unique else "INSERT OR REPLACE"
        sql = f"{verb} INTO {table} VALUES ({', '.join('?' * width)})"
        count = 0
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= BATCH:
                count += self._insert_batch(table, sql, batch)
                batch = []
        if batch:
            count += self._insert_batch(table, sql, batch)
        return count

    def _insert_batch(self, table: str, sql: str, batch: list[tuple[Any, ...]]) -> int:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(sql, batch)
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK")
                seen: set[str] = set()
                for row in batch:
                    if row[0] in seen or self.lookup(table, row[0]) is not None:
                        raise DuplicatePath(row[0]) from exc
                    seen.add(row[0])
                raise
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return len(batch)

    def clear(self, table: str) -> None:
        assert table in TABLES
        with self._lock:
            self._db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names

    def _write(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """``sql`` for each of ``rows`` in one transaction (not one implicit transaction, and page write, per row)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(sql, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def exclude(self, paths: Iterable[str]) -> None:
        self._write("INSERT INTO excluded VALUES (?)", ((p,) for p in paths))

    def add_plan(self, rows: Iterable[tuple[Any, ...]]) -> None:
        sql = f"INSERT INTO plan ({', '.join(PLAN_COLS)}) VALUES ({', '.join('?' * len(PLAN_COLS))})"  # noqa: S608
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= BATCH:
                self._write(sql, batch)
                batch = []
        if batch:
            self._write(sql, batch)

    def derive(self, sql: str, decide: Callable[[Iterator[tuple[Any, ...]]], Iterator[tuple[Any, ...]]]) -> None:
        """Fill the plan from the rows of ``sql`` through ``decide`` (one pass, a batch in memory at a time)."""
        with self._lock:
            cursor = self._db.execute(sql)

            def fetched() -> Iterator[tuple[Any, ...]]:
                while batch := cursor.fetchmany(BATCH):
                    yield from batch

            self.add_plan(decide(fetched()))
            cursor.close()

    def update_plan(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Replace decisions: rows of (action, reason, known_sha256, check_source, *expectation, path)."""
        sets = ", ".join(f"{c} = ?" for c in ("action", "reason", "known_sha256", "check_source", *EXPECT_COLS))
        self._write(f"UPDATE plan SET {sets} WHERE path = ?", list(rows))  # noqa: S608

    def record_done(self, entry: ManifestEntry) -> None:
        """A file placed by the engine (buffered; written in batches)."""
        with self._lock:
            self._pending_done.append(record_row(entry))
            if len(self._pending_done) >= BATCH:
                self._flush_done()

    def _flush_done(self) -> None:
        if self._pending_done:
            self._write(f"INSERT OR REPLACE INTO done VALUES ({', '.join('?' * len(RECORD_COLS))})", self._pending_done)  # noqa: S608
            self._pending_done = []

    # -- reading -----------------------------------------------------------------------

    def scalar(self, sql: str, *args: Any) -> Any:
        with self._lock:
            self._flush_done()
            return self._db.execute(sql, args).fetchone()[0]

    def count(self, table: str) -> int:
        assert table in (*TABLES, "plan", "excluded")
        return int(self.scalar(f"SELECT COUNT(*) FROM {table}"))  # noqa: S608 - fixed names

    def batches(self, sql: str, *args: Any, key: int = 0) -> Iterator[list[tuple[Any, ...]]]:
        """Rows of ``sql`` (which must end ``WHERE <key> > ? ORDER BY <key> LIMIT ?``) a batch at a time.

        Each batch is a fresh query from the last key seen, so no cursor stays open between
        batches (other threads write to the same database meanwhile).
        """
        last: Any = -(1 << 62) if key == 0 else ""
        while True:
            with self._lock:
                self._flush_done()
                rows = self._db.execute(sql, (*args, last, BATCH)).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][key]

    def rows(self, sql: str, *args: Any, key: int = 0) -> Iterator[tuple[Any, ...]]:
        for batch in self.batches(sql, *args, key=key):
            yield from batch

    def lookup(self, table: str, path: str) -> tuple[Any, ...] | None:
        assert table in TABLES
        with self._lock:
            row: tuple[Any, ...] | None = self._db.execute(
                f"SELECT * FROM {table} WHERE path = ?",  # noqa: S608 - fixed names
                (path,),
            ).fetchone()
            return row
