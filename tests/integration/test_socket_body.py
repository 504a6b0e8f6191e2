"""The plain-HTTP socket fast path of RangedHTTPClient against a real local server."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

from modelferry.errors import RetryableError, StalledError
from modelferry.storage import socket_body
from modelferry.storage.http import RangedHTTPClient
from tests.servers.rangefile import serve

BLOB = os.urandom(5 << 20)


def _client(stall: float = 10.0) -> RangedHTTPClient:
    return RangedHTTPClient(connect_timeout=5, stall_timeout=stall, pool_size=4)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    used: list[int] = []
    real = socket_body.stream_plain_body

    def spy(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        used.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("modelferry.storage.http.stream_plain_body", spy)
    return used


def test_ranges_come_back_exact_and_the_connection_is_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    used = _spy(monkeypatch)
    client = _client()
    with serve(BLOB) as srv:
        for start, length in [(0, 2 << 20), (123, 3 << 20), (len(BLOB) - (1 << 20) - 7, (1 << 20) + 7)]:
            got = b"".join(client.get_range(srv.url, start, length))
            assert got == BLOB[start : start + length]
        assert srv.connections == 1  # every GET after the first reused the pooled connection
    assert len(used) == 3
    client.close()


def test_small_and_chunked_bodies_take_the_ordinary_path(monkeypatch: pytest.MonkeyPatch) -> None:
    used = _spy(monkeypatch)
    client = _client()
    with serve(BLOB) as srv:
        assert b"".join(client.get_range(srv.url, 10, 1000)) == BLOB[10:1010]
    with serve(BLOB, mode="chunked") as srv:
        assert b"".join(client.get_range(srv.url, 0, 3 << 20)) == BLOB[: 3 << 20]
    assert used == []
    client.close()


def test_a_dropped_connection_is_retryable_and_not_reused() -> None:
    client = _client()
    with serve(BLOB, mode="drop", fault_after=(2 << 20) + 5) as srv:
        with pytest.raises(RetryableError, match="connection closed after"):
            b"".join(client.get_range(srv.url, 0, 4 << 20))
        srv.mode = "normal"
        assert b"".join(client.get_range(srv.url, 0, 2 << 20)) == BLOB[: 2 << 20]
        assert srv.connections == 2
    client.close()


def test_a_stalled_stream_fails_with_stalled_error() -> None:
    client = _client(stall=0.3)
    with serve(BLOB, mode="stall", fault_after=(1 << 20) + 100) as srv:
        with pytest.raises(StalledError, match="stall timeout"):
            b"".join(client.get_range(srv.url, 0, 4 << 20))
        srv.release.set()
    client.close()


def test_partial_consumption_closes_the_connection() -> None:
    client = _client()
    with serve(BLOB) as srv:
        stream = client.get_range(srv.url, 0, 4 << 20)
        assert isinstance(stream, Generator)
        first = next(stream)
        assert first and BLOB.startswith(first)
        stream.close()  # the consumer gave up mid-body: the socket must not go back to the pool
        assert b"".join(client.get_range(srv.url, 0, 2 << 20)) == BLOB[: 2 << 20]
        assert srv.connections == 2
    client.close()
