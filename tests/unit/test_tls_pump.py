"""The TLS pump: one thread decrypting the bodies of many readers, with the readers' time limits and errors."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from modelferry.errors import RetryableError, StalledError
from modelferry.storage.tls_pump import TlsPump, pump_count
from tests.servers.tlsca import PrivateCA, make_private_ca


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    return make_private_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tls_pump() -> TlsPump:
    return TlsPump()


def _pair(ca: PrivateCA) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    """A verified TLS connection over a socket pair: (client, server), the client non-blocking."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(ca.cert_file, ca.key_file)
    client_ctx = ssl.create_default_context(cafile=str(ca.ca_file))
    a, b = socket.socketpair()
    server_side: list[ssl.SSLSocket] = []
    handshake = threading.Thread(target=lambda: server_side.append(server_ctx.wrap_socket(b, server_side=True)))
    handshake.start()
    client = client_ctx.wrap_socket(a, server_hostname="localhost")
    handshake.join(10)
    client.setblocking(False)
    return client, server_side[0]


@pytest.fixture
def pairs(ca: PrivateCA) -> Iterator[list[tuple[ssl.SSLSocket, ssl.SSLSocket]]]:
    made: list[tuple[ssl.SSLSocket, ssl.SSLSocket]] = []
    yield made
    for client, server in made:
        client.close()
        server.close()


Connect = Callable[[], tuple[ssl.SSLSocket, ssl.SSLSocket]]


@pytest.fixture
def connect(ca: PrivateCA, pairs: list[tuple[ssl.SSLSocket, ssl.SSLSocket]]) -> Connect:
    """A new verified TLS pair per call, closed after the test."""

    def new() -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
        pairs.append(_pair(ca))
        return pairs[-1]

    return new


def _fill(p: TlsPump, sock: ssl.SSLSocket, want: int, stall: float | None = 10.0, arrived_wait: float = 10.0) -> bytes:
    return p.fill(sock, want, stall=stall, arrived_wait=arrived_wait, done_before=0, length=want, what="obj")


def test_one_pump_serves_many_readers_at_once_and_each_gets_its_own_bytes(
    ca: PrivateCA, tls_pump: TlsPump, pairs: list[tuple[ssl.SSLSocket, ssl.SSLSocket]]
) -> None:
    bodies = [os.urandom((1 << 20) + 17 * i) for i in range(8)]
    pairs.extend(_pair(ca) for _ in bodies)
    got: dict[int, bytes] = {}

    def read(i: int) -> None:
        client = pairs[i][0]
        data = b""
        while len(data) < len(bodies[i]):
            data += _fill(tls_pump, client, min(256 << 10, len(bodies[i]) - len(data)))
        got[i] = data

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(bodies))]
    for r in readers:
        r.start()
    for (_, server), body in zip(pairs, bodies, strict=True):  # written while every reader waits
        threading.Thread(target=server.sendall, args=(body,), daemon=True).start()
    for r in readers:
        r.join(30)
    assert got == dict(enumerate(bodies))


def test_a_trickle_is_handed_on_once_the_arrived_wait_passed(tls_pump: TlsPump, connect: Connect) -> None:
    client, server = connect()
    server.sendall(b"0123456789")
    assert _fill(tls_pump, client, 1 << 20, arrived_wait=0.05) == b"0123456789"


def test_a_socket_without_bytes_for_the_stall_timeout_fails_stalled(tls_pump: TlsPump, connect: Connect) -> None:
    client, server = connect()
    server.sendall(b"abc")
    with pytest.raises(StalledError, match="obj: no bytes for longer than the stall timeout"):
        _fill(tls_pump, client, 1 << 20, stall=0.2)


def test_a_peer_that_closes_early_is_retryable_and_says_how_far_it_got(tls_pump: TlsPump, connect: Connect) -> None:
    client, server = connect()
    server.sendall(b"x" * 1000)
    server.shutdown(socket.SHUT_RDWR)
    with pytest.raises(RetryableError) as info:
        tls_pump.fill(client, 4000, stall=10, arrived_wait=10, done_before=500, length=4500, what="obj")
    assert not isinstance(info.value, StalledError)
    assert str(info.value) == "obj: connection closed after 1500 of 4500 bytes"


class _Broken:
    """A socket whose reads fail with a defect (not an OSError): the pump must survive it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv_into(self, _view: memoryview) -> int:
        raise ZeroDivisionError("a defect")


def test_a_defect_in_one_read_reaches_its_reader_and_the_pump_goes_on(connect: Connect) -> None:
    p = TlsPump()
    client, server = connect()
    a, b = socket.socketpair()
    try:
        b.sendall(b"readable")
        with pytest.raises(ZeroDivisionError, match="a defect"):
            _fill(p, _Broken(a), 100)  # type: ignore[arg-type]
        server.sendall(b"still served")
        assert _fill(p, client, 12) == b"still served"
    finally:
        a.close()
        b.close()


def test_a_closed_socket_is_refused_without_reaching_the_pump_loop(tls_pump: TlsPump) -> None:
    a, b = socket.socketpair()
    a.close()
    b.close()
    with pytest.raises(RetryableError, match="obj: transfer interrupted"):
        _fill(tls_pump, a, 10)  # type: ignore[arg-type]


@pytest.mark.parametrize(("cpus", "pumps"), [(1, 1), (2, 1), (4, 1), (7, 1), (8, 2), (16, 4), (64, 8), (256, 8)])
def test_pumps_start_where_cores_abound(cpus: int, pumps: int) -> None:
    assert pump_count(cpus) == pumps


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as in a terminal (a process a shell started in the background ignores it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_reader_interrupted_while_waiting_lets_go_of_its_socket_first(
    tls_pump: TlsPump, connect: Connect, sigint_raises: None
) -> None:
    """Ctrl-C in a main-thread reader: the pump unregisters the socket before the reader goes on to close it."""
    client, _server = connect()

    def interrupt() -> None:
        deadline = time.monotonic() + 10
        while tls_pump.idle() and time.monotonic() < deadline:  # until the pump holds the request
            time.sleep(0.005)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    killer = threading.Thread(target=interrupt)
    with pytest.raises(KeyboardInterrupt):
        killer.start()
        _fill(tls_pump, client, 1 << 20)
    killer.join(10)
    assert tls_pump.idle()
    client.close()  # the descriptor number is free again: a new socket may get it
    again, server = connect()
    server.sendall(b"served")
    assert _fill(tls_pump, again, 6) == b"served"


def test_a_silent_socket_fails_stalled_even_with_a_short_arrived_wait(tls_pump: TlsPump, connect: Connect) -> None:
    """No byte at all: nothing to hand on, so the arrived wait must not hand on empty chunks forever."""
    client, _server = connect()
    with pytest.raises(StalledError):
        _fill(tls_pump, client, 1 << 20, stall=0.3, arrived_wait=0.02)


def test_bytes_already_decrypted_inside_openssl_come_back_without_the_kernel(
    tls_pump: TlsPump, connect: Connect
) -> None:
    """One record, its first bytes read before the pump: the rest sits in OpenSSL, the socket is not readable."""
    client, server = connect()
    record = os.urandom(16384)
    server.sendall(record)  # one TLS record
    client.setblocking(True)
    head = client.recv(100)
    client.setblocking(False)
    assert client.pending() == len(record) - len(head)
    assert head + _fill(tls_pump, client, len(record) - len(head), stall=2) == record


class _WantsWriteOnce:
    """A TLS socket whose first read needs to write first (a TLS 1.3 key update's answer)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.reads = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv_into(self, view: memoryview) -> int:
        self.reads += 1
        if self.reads == 1:
            raise ssl.SSLWantWriteError("wants to write")
        view[:2] = b"ok"
        return 2


def test_a_read_that_must_write_first_waits_for_the_socket_to_be_writable(tls_pump: TlsPump) -> None:
    a, b = socket.socketpair()
    try:
        wants = _WantsWriteOnce(a)
        assert _fill(tls_pump, wants, 2) == b"ok"  # type: ignore[arg-type]
        assert wants.reads == 2
    finally:
        a.close()
        b.close()


def test_a_defect_in_the_pump_loop_fails_the_waiting_reads_and_the_pump_goes_on(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = TlsPump()
    client, _server = connect()
    failure: list[BaseException] = []

    def read() -> None:
        try:
            _fill(p, client, 100, stall=None)
        except BaseException as exc:
            failure.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while p.idle() and time.monotonic() < deadline:  # until the pump holds the request
        time.sleep(0.005)
    turn = p._turn
    calls = iter([RuntimeError("a defect in the loop")])

    def broken() -> None:
        exc = next(calls, None)
        if exc is not None:
            raise exc
        turn()

    monkeypatch.setattr(p, "_turn", broken)
    p._wake()  # the loop comes round and meets the defect
    reader.join(10)
    assert len(failure) == 1 and isinstance(failure[0], RetryableError)
    assert "TLS reader failed" in str(failure[0])
    again, other = connect()
    other.sendall(b"ok")
    assert _fill(p, again, 2) == b"ok"
