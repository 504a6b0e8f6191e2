"""Saved hash states give the same digests as hashlib, whatever the buffer type and split point."""

from __future__ import annotations

import hashlib
import os

import pytest

from modelferry import hashstate
from modelferry.hashstate import HashCheckpoint, ResumableHash, state_tag
from modelferry.transfer.verify import InOrderHasher

pytestmark = pytest.mark.skipif(not hashstate.available(), reason="libcrypto's digest functions are not loadable")


@pytest.mark.parametrize("name", ["sha256", "md5", "sha1"])
def test_a_state_saved_midway_continues_to_the_hashlib_digest(name: str) -> None:
    data = os.urandom(3_000_001)
    first = ResumableHash(name)
    first.update(data[:1_234_567])
    saved = first.state()
    resumed = ResumableHash(name, saved)
    resumed.update(bytearray(data[1_234_567:2_000_000]))  # writable buffer: no copy
    resumed.update(memoryview(data)[2_000_000:])  # read-only slice
    assert resumed.hexdigest() == hashlib.new(name, data).hexdigest()
    assert first.hexdigest() == hashlib.new(name, data[:1_234_567]).hexdigest()  # digest() does not finalize
    first.update(b"more")
    assert first.hexdigest() == hashlib.new(name, data[:1_234_567] + b"more").hexdigest()


def test_checkpoints_survive_json_and_refuse_foreign_or_damaged_states() -> None:
    h = ResumableHash("sha256")
    h.update(b"abc")
    cp = HashCheckpoint(3, {"sha256": h.state()})
    back = HashCheckpoint.from_json(cp.to_json())
    assert back == cp
    assert ResumableHash("sha256", back.states["sha256"]).hexdigest() == hashlib.sha256(b"abc").hexdigest()
    foreign = cp.to_json() | {"tag": state_tag() + "-other"}
    assert HashCheckpoint.from_json(foreign) is None
    short = cp.to_json() | {"states": {"sha256": "AAAA"}}
    assert HashCheckpoint.from_json(short) is None
    assert HashCheckpoint.from_json({"position": "x"}) is None
    assert HashCheckpoint.from_json(cp.to_json() | {"states": {"blake2b": cp.to_json()["states"]["sha256"]}}) is None
    with pytest.raises(ValueError, match="128 bytes"):
        ResumableHash("md5", b"short")


def test_the_in_order_hasher_snapshots_at_part_ends_and_resumes_from_them() -> None:
    data = os.urandom(10 * 65536 + 17)
    step = 65536
    parts = [(o, min(step, len(data) - o)) for o in range(0, len(data), step)]
    ends = {o + n for o, n in parts}
    first = InOrderHasher(len(data), md5=True, git_sha1=True, checkpoints=ends)
    for o, n in reversed(parts[:5]):  # out of order: hashed once part 0 arrives
        first.feed(o, data[o : o + n])
    assert first.position == 5 * step
    assert first.checkpoint_within(3 * step + 10) is not None
    cp = first.checkpoint_within(3 * step + 10)
    assert cp is not None and cp.position == 3 * step
    second = InOrderHasher(len(data), md5=True, git_sha1=True, checkpoints=ends, resume=cp)
    for o, n in parts:  # parts before the checkpoint are ignored
        second.feed(o, data[o : o + n])
    assert second.wait_complete(5)
    assert second.sha256() == hashlib.sha256(data).hexdigest()
    assert second.md5() == hashlib.md5(data).hexdigest()
    git = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
    assert second.git_sha1() == git
