"""The part writer of object stores: one part buffered in memory, uploaded when it is complete.

Object stores take a part in one request, so the engine's streamed writes are
collected first; a part that ends short is a retryable failure (the engine
fetches it again) rather than a truncated upload.
"""

from __future__ import annotations

from typing import Protocol

from modelferry.errors import RetryableError
from modelferry.storage.base import PartWriter


class BufferedUpload(Protocol):
    """What :class:`BufferedPart` needs from its upload."""

    path: str
    describe: str

    def commit_part(self, index: int, data: bytearray) -> None:
        """Upload part ``index`` (multipart) or keep it for the single PUT."""


class BufferedPart(PartWriter):
    """Buffers one part; ``commit`` hands the complete buffer to the upload (no second copy)."""

    def __init__(self, upload: BufferedUpload, index: int, length: int) -> None:
        self.upload = upload
        self.index = index
        self.length = length
        self.buffer = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        self.buffer += data

    def commit(self) -> None:
        if len(self.buffer) != self.length:
            raise RetryableError(f"part {self.index} of {self.upload.path} ended early", obj=self.upload.describe)
        data, self.buffer = self.buffer, bytearray()
        self.upload.commit_part(self.index, data)

    def discard(self) -> None:
        self.buffer = bytearray()
