"""A TLS-terminating TCP proxy: puts any loopback test server (moto, the Hub and IAM stand-ins, the
Oracle stand-in, MLflow, OpenBao, the API emulator) behind real HTTPS with a private CA.

Each accepted connection is wrapped in TLS with the server certificate, then its bytes are relayed
to the plain backend in both directions by two threads. A client that does not trust the CA fails
its handshake; the proxy counts that (``handshake_failures``) and goes on serving.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from types import TracebackType
from urllib.parse import urlsplit

from tests.servers.tlsca import PrivateCA


class TLSProxy:
    """``https://127.0.0.1:<port>`` in front of ``backend`` (``http://host:port``)."""

    def __init__(self, backend: str, ca: PrivateCA) -> None:
        parts = urlsplit(backend)
        self.backend = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(ca.cert_file), str(ca.key_file))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.handshake_failures = 0
        self.accepted = 0  # counted before the handshake starts, so a client never sees a stale count
        self.connections = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tls-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> TLSProxy:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            victims = list(self._open)
        for sock in victims:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            with self._lock:
                self.handshake_failures += 1
            raw.close()
            return
        client.settimeout(None)
        try:
            upstream = socket.create_connection(self.backend, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self.connections += 1
            self._open |= {client, upstream}
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        with self._lock:
            self._open -= {client, upstream}
        for sock in (client, upstream):
            sock.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # Half-close toward the destination so it sees end-of-stream; the other pump ends on its own.
            with contextlib.suppress(OSError):
                if isinstance(dst, ssl.SSLSocket):
                    socket.socket.shutdown(dst, socket.SHUT_WR)
                else:
                    dst.shutdown(socket.SHUT_WR)
