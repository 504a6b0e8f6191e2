"""The HTTPS body fast path of RangedHTTPClient (records decrypted straight into chunks) against a real TLS server."""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelferry.errors import PermanentError, RetryableError, StalledError, TLSVerificationError
from modelferry.storage import tls_body
from modelferry.storage.base import FileSink, InPlace
from modelferry.storage.http import RangedHTTPClient
from modelferry.tls import OP_ENABLE_KTLS, TLSConfig
from tests.servers.rangefile import serve
from tests.servers.tlsca import PrivateCA, make_private_ca

BLOB = os.urandom(5 << 20)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    return make_private_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server_tls(ca: PrivateCA) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(ca.cert_file, ca.key_file)
    return ctx


def _client(ca: PrivateCA | Path, stall: float = 10.0) -> RangedHTTPClient:
    bundle = ca.ca_file if isinstance(ca, PrivateCA) else ca
    return RangedHTTPClient(
        connect_timeout=5, stall_timeout=stall, pool_size=4, tls=TLSConfig(ca=str(bundle), origin="test")
    )


@pytest.fixture
def used(monkeypatch: pytest.MonkeyPatch) -> list[ssl.SSLSocket]:
    """The sockets the TLS fast path read from, one per body."""
    seen: list[ssl.SSLSocket] = []
    real = tls_body.stream_tls_body

    def spy(parts: tls_body.DirectBody, *args: object, **kwargs: object) -> Iterator[bytes]:
        assert isinstance(parts[2], ssl.SSLSocket)
        seen.append(parts[2])
        return real(parts, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("modelferry.storage.http.stream_tls_body", spy)
    return seen


def test_ranges_come_back_exact_over_https_and_the_connection_is_reused(
    ca: PrivateCA, server_tls: ssl.SSLContext, used: list[ssl.SSLSocket]
) -> None:
    client = _client(ca)
    with serve(BLOB, tls=server_tls) as srv:
        for start, length in [(0, 2 << 20), (123, 3 << 20), (len(BLOB) - (1 << 20) - 7, (1 << 20) + 7)]:
            chunks = list(client.get_range(srv.url, start, length))
            assert b"".join(chunks) == BLOB[start : start + length]
            assert all(isinstance(c, bytes) for c in chunks)  # immutable: the hasher may keep them
            assert max(len(c) for c in chunks) <= client.chunk_size
        assert srv.connections == 1  # every GET after the first reused the pooled connection
    assert len(used) == 3
    client.close()


def test_small_and_chunked_https_bodies_take_the_ordinary_path(
    ca: PrivateCA, server_tls: ssl.SSLContext, used: list[ssl.SSLSocket]
) -> None:
    client = _client(ca)
    with serve(BLOB, tls=server_tls) as srv:
        assert b"".join(client.get_range(srv.url, 10, 1000)) == BLOB[10:1010]
    with serve(BLOB, mode="chunked", tls=server_tls) as srv:
        assert b"".join(client.get_range(srv.url, 0, 3 << 20)) == BLOB[: 3 << 20]
    assert used == []
    client.close()


def test_a_connection_dropped_mid_body_is_retryable_and_not_reused(
    ca: PrivateCA, server_tls: ssl.SSLContext, used: list[ssl.SSLSocket]
) -> None:
    client = _client(ca)
    with serve(BLOB, mode="drop", fault_after=(2 << 20) + 5, tls=server_tls) as srv:
        with pytest.raises(RetryableError, match="connection closed after") as info:
            b"".join(client.get_range(srv.url, 0, 4 << 20))
        assert not isinstance(info.value, StalledError)
        srv.mode = "normal"
        assert b"".join(client.get_range(srv.url, 0, 2 << 20)) == BLOB[: 2 << 20]
        assert srv.connections == 2
    assert len(used) == 2
    client.close()


def test_a_stalled_https_stream_fails_with_stalled_error(
    ca: PrivateCA, server_tls: ssl.SSLContext, used: list[ssl.SSLSocket]
) -> None:
    client = _client(ca, stall=0.3)
    with serve(BLOB, mode="stall", fault_after=(1 << 20) + 100, tls=server_tls) as srv:
        with pytest.raises(StalledError, match="stall timeout"):
            b"".join(client.get_range(srv.url, 0, 4 << 20))
        srv.release.set()
    assert len(used) == 1
    client.close()


def test_a_trickle_is_handed_on_before_the_chunk_fills(
    ca: PrivateCA, server_tls: ssl.SSLContext, used: list[ssl.SSLSocket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The low-speed check must see a trickling server: a chunk goes out with what arrived once ARRIVED_WAIT passed."""
    monkeypatch.setattr(tls_body, "ARRIVED_WAIT", 0.05)
    client = _client(ca)
    head = (2 << 20) + 3
    with serve(BLOB, mode="trickle", fault_after=head, tls=server_tls) as srv:
        stream = client.get_range(srv.url, 0, 3 << 20)
        received = b""
        while len(received) <= head:  # up to the first chunk holding a trickled byte
            chunk = next(stream)
            received += chunk
        assert len(chunk) < client.chunk_size  # handed on short: the trickle did not fill it
        assert head < len(received) < 3 << 20
        assert received == BLOB[: len(received)]
        srv.release.set()
        stream.close()  # a half-read response: the connection is closed, not reused
    assert len(used) == 1
    client.close()


def test_the_bulk_context_asks_for_kernel_tls_and_falls_back_where_the_kernel_has_none(
    ca: PrivateCA, server_tls: ssl.SSLContext, used: list[ssl.SSLSocket]
) -> None:
    ctx = TLSConfig(ca=str(ca.ca_file)).bulk_context()
    assert ctx.options & OP_ENABLE_KTLS
    assert not TLSConfig(ca=str(ca.ca_file)).ssl_context().options & OP_ENABLE_KTLS  # the shared one is untouched
    client = _client(ca)
    with serve(BLOB, tls=server_tls) as srv:
        assert b"".join(client.get_range(srv.url, 5, 3 << 20)) == BLOB[5 : 5 + (3 << 20)]
    client.close()
    assert len(used) == 1
    if not tls_body.ktls_offered():  # this kernel has no tls ULP: OpenSSL stayed in user space
        assert not tls_body.ktls_receive(used[0])


def test_an_untrusted_server_is_a_permanent_tls_error_naming_the_ca(
    server_tls: ssl.SSLContext, tmp_path: Path, used: list[ssl.SSLSocket]
) -> None:
    other = make_private_ca(tmp_path / "other", name="some other CA")
    client = _client(other)
    with (
        serve(BLOB, tls=server_tls) as srv,
        pytest.raises(TLSVerificationError, match="certificate verify failed") as info,
    ):
        b"".join(client.get_range(srv.url, 0, 2 << 20))
    assert str(other.ca_file) in str(info.value)
    assert info.value.hint and "--ca-bundle" in info.value.hint
    assert used == []
    client.close()


def test_interrupt_wakes_a_reader_blocked_on_a_tls_body(
    ca: PrivateCA, server_tls: ssl.SSLContext, used: list[ssl.SSLSocket]
) -> None:
    """Cancellation (SIGTERM) shuts the TLS socket down under the reader: it fails at once, not after the stall timeout."""
    client = _client(ca, stall=60)
    first = threading.Event()
    failure: list[BaseException] = []

    def read() -> None:
        try:
            for _ in client.get_range(srv.url, 0, 4 << 20):
                first.set()
        except BaseException as exc:
            failure.append(exc)

    with serve(BLOB, mode="stall", fault_after=(1 << 20) + 100, tls=server_tls) as srv:
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert first.wait(10)
        client.interrupt()
        reader.join(20)
        assert not reader.is_alive()
    assert len(failure) == 1
    assert isinstance(failure[0], RetryableError) and not isinstance(failure[0], StalledError)
    assert len(used) == 1
    client.close()


# -- into a file: the pump writes the body itself (local targets) --------------------------------


def _file(tmp_path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    return os.open(tmp_path / "f", flags, 0o644)


def test_an_https_body_for_a_file_is_written_by_the_pump_at_its_offsets(
    ca: PrivateCA, server_tls: ssl.SSLContext, used: list[ssl.SSLSocket], tmp_path: Path
) -> None:
    client = _client(ca)
    fd = _file(tmp_path)
    start, length, at = 123, 3 << 20, 1000  # bytes [start, start + length) go to the file at ``at``
    try:
        with serve(BLOB, tls=server_tls) as srv:
            chunks = list(client.get_range_into(srv.url, start, length, FileSink(fd, at, lambda exc: exc)))
            assert srv.connections == 1
        first, rest = chunks[0], chunks[1:]
        assert type(first) is bytes and rest and all(isinstance(c, InPlace) for c in rest)
        assert len(first) + sum(int(c) for c in rest) == length
        os.pwrite(fd, first, at)  # what came as bytes is the caller's to write (copy_part does)
        assert os.pread(fd, length, at) == BLOB[start : start + length]
        assert client.pumped_bytes == length - len(first)
    finally:
        os.close(fd)
        client.close()


def test_a_write_error_in_the_pump_is_the_sinks_error_and_nothing_is_reported_written(
    ca: PrivateCA, server_tls: ssl.SSLContext, used: list[ssl.SSLSocket], tmp_path: Path
) -> None:
    (tmp_path / "f").write_bytes(b"")
    fd = _file(tmp_path, os.O_RDONLY)  # pwrite fails with EBADF
    seen: list[OSError] = []

    def translate(exc: OSError) -> Exception:
        seen.append(exc)
        return PermanentError(f"cannot write {tmp_path / 'f'}: {exc}", obj=str(tmp_path / "f"))

    client = _client(ca)
    got: list[bytes | InPlace] = []
    try:
        with serve(BLOB, tls=server_tls) as srv, pytest.raises(PermanentError, match="cannot write"):
            for chunk in client.get_range_into(srv.url, 0, 3 << 20, FileSink(fd, 0, translate)):
                got.append(chunk)
    finally:
        os.close(fd)
        client.close()
    assert seen and all(type(c) is bytes for c in got)  # no InPlace count for bytes that never landed


def test_an_append_only_file_gets_the_https_bytes_from_the_caller_not_the_pump(
    ca: PrivateCA, server_tls: ssl.SSLContext, used: list[ssl.SSLSocket], tmp_path: Path
) -> None:
    """pwrite on O_APPEND appends whatever the offset (Linux): the pump must not write there."""
    fd = _file(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    client = _client(ca)
    try:
        with serve(BLOB, tls=server_tls) as srv:
            chunks = list(client.get_range_into(srv.url, 5, 3 << 20, FileSink(fd, 0, lambda exc: exc)))
    finally:
        os.close(fd)
        client.close()
    assert all(type(c) is bytes for c in chunks)
    assert b"".join(c for c in chunks if isinstance(c, bytes)) == BLOB[5 : 5 + (3 << 20)]
    assert client.pumped_bytes == 0
