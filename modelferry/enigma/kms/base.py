"""The key provider interface: make, unwrap and rewrap 256-bit data keys."""

from __future__ import annotations

import abc
import os
from typing import ClassVar

from modelferry.enigma.crypto import DATA_KEY_SIZE
from modelferry.enigma.format import KeyBlock
from modelferry.errors import UsageError


class KeyProvider(abc.ABC):
    """A KMS that wraps data keys. Implementations translate their SDK errors into modelferry.errors."""

    name: ClassVar[str]

    @abc.abstractmethod
    def wrap(self, data_key: bytes) -> KeyBlock:
        """Wrap ``data_key`` under the provider's current key."""

    @abc.abstractmethod
    def unwrap(self, block: KeyBlock) -> bytes:
        """The data key inside ``block``; AccessDeniedError/IntegrityError when it cannot be had."""

    def new_data_key(self) -> tuple[bytes, KeyBlock]:
        """A fresh random data key and its wrapped form."""
        key = os.urandom(DATA_KEY_SIZE)
        return key, self.wrap(key)

    def rewrap(self, block: KeyBlock) -> KeyBlock:
        """``block`` wrapped again under the newest key version (after a rotation)."""
        return self.wrap(self.unwrap(block))

    def check_block(self, block: KeyBlock) -> None:
        if block.provider != self.name:
            raise UsageError(
                f"the file was encrypted with the {block.provider!r} provider, not {self.name!r}",
                hint=f"Use --provider {block.provider}",
            )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
