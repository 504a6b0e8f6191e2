"""Copying one part: source bytes into the part writer, the in-order hasher and the progress counters.

Bytes arrive either as ``bytes`` chunks (written, fed to the hasher while in memory) or, for
local targets read over plain HTTP, as :class:`~modelferry.storage.base.InPlace` counts of bytes
the source spliced into the file itself; those are handed to the hasher as ranges on disk, in
runs of :data:`MARK_EVERY` bytes, and hashed back from the page cache.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable

from modelferry.errors import RetryableError
from modelferry.retry import Cancelled
from modelferry.speed import LowSpeedGuard
from modelferry.storage.base import FilePartWriter, InPlace, Store
from modelferry.transfer.inflight import FileJob
from modelferry.transfer.progress import Progress

MARK_EVERY = 4 << 20  # spliced bytes go to the hasher in runs of this size (fewer, larger read-backs)


def copy_part(
    source: Store,
    job: FileJob,
    idx: int,
    offset: int,
    length: int,
    *,
    progress: Progress,
    stopped: Callable[[], bool],
    after_chunk: Callable[[], None],
    speed: LowSpeedGuard | None = None,
) -> bytes | None:
    """Copy part ``idx`` (``length`` bytes at ``offset``) of ``job``; its MD5 when the job wants part MD5s.

    Raises :class:`Cancelled` as soon as ``stopped()`` says so, and ``speed``'s
    :class:`~modelferry.errors.TooSlowError` when the run stays under the low-speed limit; on any
    failure the part is discarded and its bytes are taken back out of the progress counters.
    """
    assert job.upload is not None and job.hasher is not None
    hasher = job.hasher
    what = source.describe(job.info.path)
    writer = job.upload.part(idx, offset, length)
    md5 = hashlib.md5() if job.want_part_md5 else None  # noqa: S324 - protocol checksum
    # Per-part MD5s need the bytes in hand: no splicing then.
    direct = writer if isinstance(writer, FilePartWriter) and md5 is None else None
    sink = direct.sink() if direct is not None else None
    pos = offset
    marked = offset  # spliced bytes [marked, pos) not yet handed to the hasher
    started = speed.clock() if speed is not None else 0.0
    try:
        if length:
            chunks = (
                source.read_into(job.info.path, offset, length, sink, info=job.info)
                if sink is not None
                else source.read(job.info.path, offset, length, info=job.info)
            )
            for chunk in chunks:
                if stopped():
                    raise Cancelled("sync cancelled", obj=job.info.path)
                size = int(chunk) if isinstance(chunk, InPlace) else len(chunk)
                if pos + size > offset + length:
                    raise RetryableError("server sent more bytes than asked", obj=what)
                if speed is not None:
                    speed.add(size)
                    speed.check(started, what)
                if isinstance(chunk, InPlace):
                    assert direct is not None  # only a sink makes a source write in place
                    direct.advance(size)
                    pos += size
                    if pos - marked >= MARK_EVERY:
                        hasher.mark_on_disk(marked, pos)
                        marked = pos
                    progress.add_bytes(size, size)
                    continue
                if marked < pos:
                    hasher.mark_on_disk(marked, pos)
                writer.write(chunk)
                if md5 is not None:
                    md5.update(chunk)
                hasher.feed(pos, chunk)
                pos += size
                marked = pos
                progress.add_bytes(size, size)
                after_chunk()
        if marked < pos:
            hasher.mark_on_disk(marked, pos)
        if pos != offset + length:
            raise RetryableError(f"short read: got {pos - offset} of {length} bytes", obj=what)
        writer.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            writer.discard()
        progress.add_bytes(-(pos - offset), 0)
        raise
    return md5.digest() if md5 is not None else None
