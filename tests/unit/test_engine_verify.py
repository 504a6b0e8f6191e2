"""The in-order hasher, expectations and the multipart ETag rule."""

from __future__ import annotations

import hashlib
import random
import threading

from modelferry.checksums import b64_to_hex, clean_etag
from modelferry.storage.base import ObjectInfo
from modelferry.transfer.verify import Expectation, InOrderHasher, check, multipart_etag

DATA = bytes(random.Random(7).getrandbits(8) for _ in range(10_000))
SHA = hashlib.sha256(DATA).hexdigest()


def chunks(data: bytes, size: int) -> list[tuple[int, bytes]]:
    return [(off, data[off : off + size]) for off in range(0, len(data), size)]


def test_out_of_order_feeds_hash_in_order() -> None:
    pieces = chunks(DATA, 777)
    random.Random(1).shuffle(pieces)
    hasher = InOrderHasher(len(DATA), md5=True, git_sha1=True)
    for off, piece in pieces:
        hasher.feed(off, piece)
    assert hasher.wait_complete(timeout=5)
    assert hasher.sha256() == SHA
    assert hasher.md5() == hashlib.md5(DATA).hexdigest()
    assert hasher.git_sha1() == hashlib.sha1(f"blob {len(DATA)}\0".encode() + DATA).hexdigest()
    assert hasher.read_back_bytes == 0


def test_budget_overflow_is_read_back_from_the_target() -> None:
    disk = bytearray(len(DATA))
    calls: list[tuple[int, int]] = []

    def read_back(offset: int, length: int) -> bytes:
        calls.append((offset, length))
        return bytes(disk[offset : offset + length])

    hasher = InOrderHasher(len(DATA), read_back=read_back, budget=1000)
    # Everything but the first chunk arrives first: only 1000 bytes may wait in memory.
    pieces = chunks(DATA, 500)
    for off, piece in pieces[1:]:
        disk[off : off + len(piece)] = piece  # the engine writes before it feeds
        hasher.feed(off, piece)
    assert hasher.position == 0
    off, piece = pieces[0]
    disk[off : off + len(piece)] = piece
    hasher.feed(off, piece)
    assert hasher.wait_complete(timeout=5)
    assert hasher.sha256() == SHA
    assert hasher.read_back_bytes == len(DATA) - 500 - 1000
    assert calls


def test_retried_overlapping_ranges_are_hashed_once() -> None:
    hasher = InOrderHasher(len(DATA))
    hasher.feed(0, DATA[:3000])
    # A part 2000-6000 failed after 1500 bytes, then was fetched again whole: the overlap is ignored.
    hasher.feed(2000, DATA[2000:3500])
    hasher.feed(2000, DATA[2000:6000])
    hasher.feed(6000, DATA[6000:])
    assert hasher.wait_complete(timeout=5)
    assert hasher.sha256() == SHA


def test_retried_pending_range_does_not_leak_budget() -> None:
    reads: list[int] = []

    def read_back(offset: int, length: int) -> bytes:
        reads.append(length)
        return DATA[offset : offset + length]

    hasher = InOrderHasher(len(DATA), read_back=read_back, budget=100)
    hasher.feed(50, DATA[50:90])
    hasher.feed(50, DATA[50:90])  # the same range again after a retry
    hasher.feed(90, DATA[90:130])  # still fits the 100-byte budget: 80 bytes pending
    hasher.feed(0, DATA[:50])
    hasher.feed(130, DATA[130:])
    assert hasher.wait_complete(timeout=5)
    assert hasher.sha256() == SHA
    assert reads == []


def test_resumed_ranges_marked_on_disk() -> None:
    hasher = InOrderHasher(len(DATA), read_back=lambda o, n: DATA[o : o + n], budget=1 << 20)
    hasher.mark_on_disk(0, 4000)
    hasher.feed(4000, DATA[4000:])
    assert hasher.wait_complete(timeout=5)
    assert hasher.sha256() == SHA
    assert hasher.read_back_bytes == 4000


def test_concurrent_feeders() -> None:
    hasher = InOrderHasher(len(DATA))
    pieces = chunks(DATA, 100)
    random.Random(3).shuffle(pieces)

    def feeder(part: list[tuple[int, bytes]]) -> None:
        for off, piece in part:
            hasher.feed(off, piece)

    threads = [threading.Thread(target=feeder, args=(pieces[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert hasher.wait_complete(timeout=5)
    assert hasher.sha256() == SHA


def test_multipart_etag_rule() -> None:
    parts = [DATA[:4000], DATA[4000:8000], DATA[8000:]]
    md5s = [hashlib.md5(p).digest() for p in parts]
    # Written out by hand: md5 over the concatenated binary part digests, then "-<count>".
    expected = hashlib.md5(md5s[0] + md5s[1] + md5s[2]).hexdigest() + "-3"
    assert multipart_etag(md5s) == expected
    # A pinned value for one part "hello": md5 of the 16 digest bytes of md5("hello"), then "-1".
    assert multipart_etag([hashlib.md5(b"hello").digest()]) == "62109206880d38a4010a98e11243924a-1"


def test_expectation_strength_and_check() -> None:
    info = ObjectInfo(path="a", size=len(DATA), etag='"5d41402abc4b2a76b9719d911017c592-3"', part_size=4000)
    exp = Expectation.for_object(info)
    assert exp.strength == "multipart-etag" and exp.part_size == 4000
    # Only an MD5 before the dash makes a multipart ETag: nginx's "<mtime hex>-<size hex>" is opaque
    # (no HEAD for it at listing time, nothing to verify but the size).
    for opaque in (
        '"6571a2b3-1000"',
        '"abc-3"',
        '"5d41402abc4b2a76b9719d911017c59-3"',
        '"5d41402abc4b2a76b9719d911017c592-x"',
    ):
        other = ObjectInfo(path="a", size=len(DATA), etag=opaque)
        assert other.multipart_count is None and Expectation.for_object(other).strength == "size", opaque
    parts = [hashlib.md5(DATA[o : o + 4000]).digest() for o in range(0, len(DATA), 4000)]
    good = Expectation(multipart_etag=multipart_etag(parts), part_size=4000)
    assert check(good, size=1, got_size=1, sha256="x", md5=None, git_sha1=None, part_md5s=parts) is None
    assert "multipart" in (check(exp, size=1, got_size=1, sha256="x", md5=None, git_sha1=None, part_md5s=parts) or "")
    single = Expectation.for_object(ObjectInfo(path="a", size=3, etag='"5D41402ABC4B2A76B9719D911017C592"'))
    assert single.md5 == "5d41402abc4b2a76b9719d911017c592" and single.strength == "md5"
    assert Expectation.for_object(ObjectInfo(path="a", size=3, sha256="ff")).strength == "sha256"
    assert Expectation.for_object(ObjectInfo(path="a", size=3)).strength == "size"
    sha = Expectation(sha256=SHA.upper())
    assert check(sha, size=5, got_size=5, sha256=SHA, md5=None, git_sha1=None, part_md5s=None) is None
    assert "size" in (check(sha, size=5, got_size=4, sha256=SHA, md5=None, git_sha1=None, part_md5s=None) or "")
    assert "sha256" in (check(sha, size=5, got_size=5, sha256="0", md5=None, git_sha1=None, part_md5s=None) or "")


def test_etag_helpers() -> None:
    assert clean_etag(' "ABC" ') == "abc"
    assert clean_etag(None) is None
    assert b64_to_hex("XUFAKrxLKna5cZ2REBfFkg==") == "5d41402abc4b2a76b9719d911017c592"
    assert b64_to_hex("not base64!") is None
