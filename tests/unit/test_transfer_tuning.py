"""Scheduling and hashing choices made for throughput: queue order, files in flight, read-back."""

from __future__ import annotations

import hashlib
import os

import pytest

from modelferry.transfer.inflight import files_in_flight, interleave, scheduling_part_size, worker_count
from modelferry.transfer.verify import InOrderHasher


def test_interleave_alternates_files_within_a_group_and_keeps_file_order() -> None:
    order = interleave([3, 2, 1, 2], group=2)
    assert order == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (2, 0), (3, 0), (3, 1)]
    for f in range(4):
        idxs = [i for n, i in order if n == f]
        assert idxs == sorted(idxs)
    assert sorted(order) == sorted((f, i) for f, n in enumerate([3, 2, 1, 2]) for i in range(n))


def test_interleave_with_group_one_is_file_by_file() -> None:
    assert interleave([2, 2], group=1) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert interleave([], group=4) == []


@pytest.mark.parametrize(
    ("concurrency", "files", "expected"),
    [(32, 5, 4), (16, 5, 2), (4, 5, 2), (64, 3, 3), (32, 1, 1), (1, 10, 2)],
)
def test_files_in_flight(concurrency: int, files: int, expected: int) -> None:
    assert files_in_flight(concurrency, files) == expected


def test_read_back_runs_outside_the_lock_and_hashes_right() -> None:
    data = os.urandom(3 << 20)
    held: list[bool] = []
    hasher: InOrderHasher

    def read_back(offset: int, length: int) -> bytes:
        got = hasher._lock.acquire(blocking=False)
        held.append(not got)
        if got:
            hasher._lock.release()
        return data[offset : offset + length]

    hasher = InOrderHasher(len(data), read_back=read_back, budget=1 << 20)
    third = 1 << 20
    hasher.feed(2 * third, data[2 * third :])  # fits the budget: kept in memory
    hasher.feed(third, data[third : 2 * third])  # over budget: read back later
    hasher.feed(0, data[:third])
    assert hasher.wait_complete(timeout=5)
    assert hasher.sha256() == hashlib.sha256(data).hexdigest()
    assert hasher.read_back_bytes == third
    assert held and not any(held)


def test_a_failed_read_back_leaves_the_hasher_usable_for_a_retry() -> None:
    data = os.urandom(2 << 20)
    fail = [True]

    def read_back(offset: int, length: int) -> bytes | None:
        if fail[0]:
            fail[0] = False
            return None
        return data[offset : offset + length]

    hasher = InOrderHasher(len(data), read_back=read_back, budget=0)
    hasher.feed(1 << 20, data[1 << 20 :])
    with pytest.raises(RuntimeError, match="short read back"):
        hasher.feed(0, data[: 1 << 20])
    hasher.mark_on_disk(1 << 20, len(data))  # the range is still on disk; hashing resumes
    assert hasher.wait_complete(timeout=5)
    assert hasher.sha256() == hashlib.sha256(data).hexdigest()


MiB = 1 << 20


@pytest.mark.parametrize(
    ("size", "part_size", "concurrency", "group", "expected"),
    [
        (512 * MiB, 64 * MiB, 32, 4, 16 * MiB),  # 8 connections per file, 4 parts each
        (10 * 1024 * MiB, 64 * MiB, 32, 4, 64 * MiB),  # big files keep the configured part size
        (20 * MiB, 64 * MiB, 32, 4, 8 * MiB),  # never below 8 MiB
        (20 * MiB, 1 * MiB, 32, 4, 1 * MiB),  # never above the configured part size
        (0, 64 * MiB, 32, 4, 8 * MiB),
    ],
)
def test_scheduling_part_size(size: int, part_size: int, concurrency: int, group: int, expected: int) -> None:
    assert scheduling_part_size(size, part_size, concurrency, group) == expected


@pytest.mark.parametrize(
    ("concurrency", "parts", "copies", "copy_bytes", "expected"),
    [
        (64, 64, 20_000, 20_000 * 8192, 32),  # small files: fewer threads than connections allowed
        (16, 16, 20_000, 20_000 * 8192, 16),  # never more than asked
        (64, 64, 4, 2 << 30, 64),  # large files: every connection
        (64, 3, 3, 3 * 1024, 3),  # never more than there are parts
        (64, 0, 0, 0, 1),
    ],
)
def test_worker_count(concurrency: int, parts: int, copies: int, copy_bytes: int, expected: int) -> None:
    assert worker_count(concurrency, parts, copies, copy_bytes) == expected
