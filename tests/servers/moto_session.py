"""A clean shared moto server for one test: the body of every module's ``moto`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

from tests.servers.s3 import MotoS3, shared_servers


def clean_moto() -> Iterator[MotoS3]:
    """Yield the process's first shared moto server, emptied before and after the test.

    Use as ``yield from clean_moto()`` inside a ``@pytest.fixture``.
    """
    server = shared_servers()[0]
    server.reset()
    yield server
    server.reset()
