"""A source-only store (the Hub, the decrypting view) refuses target work with a usage error (exit 2)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest

from modelferry.errors import UsageError
from modelferry.storage.base import ObjectInfo, Store
from modelferry.transfer.manifest import Manifest, write_manifest
from modelferry.uri import parse_uri


class ReadOnly(Store):
    def __init__(self) -> None:
        self.uri = parse_uri("hf://org/model")

    def list(self) -> Iterator[ObjectInfo]:
        yield ObjectInfo(path="config.json", size=2)

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        yield b"{}"[start : start + length]


def test_source_only_store_refuses_target_work() -> None:
    store = ReadOnly()
    for call in (
        lambda: store.open_upload("x", 1, 1),
        lambda: store.delete("x"),
        lambda: store.copy_within(store, ObjectInfo(path="x", size=1), "x", 1),
        lambda: write_manifest(store, Manifest(source="s", revision=None)),
    ):
        with pytest.raises(UsageError) as info:
            call()
        assert info.value.exit_code == 2
        assert "hf://" in str(info.value)
    store.cleanup_partials()  # a store without partials: nothing to do, no error
    assert store.read_bytes("config.json") == b"{}"
