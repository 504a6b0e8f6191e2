"""BufferedPart: the in-memory part writer shared by the object-store uploads."""

from __future__ import annotations

import pytest

from modelferry.errors import RetryableError
from modelferry.storage.buffered_part import BufferedPart


class FakeUpload:
    path = "model/weights.bin"
    describe = "oci://ns/bucket/model/weights.bin"

    def __init__(self) -> None:
        self.committed: dict[int, bytes] = {}

    def commit_part(self, index: int, data: bytearray) -> None:
        self.committed[index] = bytes(data)


def test_complete_part_is_handed_over_once() -> None:
    upload = FakeUpload()
    part = BufferedPart(upload, 3, 6)
    part.write(b"abc")
    part.write(memoryview(b"def"))
    part.commit()
    assert upload.committed == {3: b"abcdef"}
    assert part.buffer == bytearray()


def test_short_part_is_retryable_and_not_uploaded() -> None:
    upload = FakeUpload()
    part = BufferedPart(upload, 0, 10)
    part.write(b"abc")
    with pytest.raises(RetryableError, match=r"part 0 of model/weights\.bin ended early"):
        part.commit()
    assert upload.committed == {}


def test_discard_forgets_written_bytes() -> None:
    upload = FakeUpload()
    part = BufferedPart(upload, 1, 3)
    part.write(b"xyz")
    part.discard()
    part.write(b"abc")
    part.commit()
    assert upload.committed == {1: b"abc"}
