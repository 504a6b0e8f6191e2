"""A tiny threaded HTTP/1.1 file server with Range support and injectable faults (for the socket fast path).

Serves one in-memory blob at any path. ``mode`` picks the behaviour of body responses:
``normal``; ``chunked`` (Transfer-Encoding: chunked, no Content-Length); ``drop`` (close the
connection after ``fault_after`` body bytes); ``stall`` (send ``fault_after`` bytes then wait
until ``release`` is set); ``trickle`` (send ``fault_after`` bytes, then one byte every
:data:`TRICKLE_EVERY` seconds until ``release`` is set, counting them in ``trickled``). ``connections`` counts accepted TCP connections.
With ``tls`` (a server SSLContext) it speaks HTTPS.
"""

from __future__ import annotations

import re
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TRICKLE_EVERY = 0.02
_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


@dataclass
class RangeFileServer:
    """State shared by the handler threads."""

    blob: bytes
    mode: str = "normal"
    fault_after: int = 0
    connections: int = 0
    trickled: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""


def _handler(state: RangeFileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            state.connections += 1
            super().setup()

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            match = _RANGE.fullmatch(self.headers.get("Range", ""))
            start, end = (int(match[1]), int(match[2])) if match else (0, len(state.blob) - 1)
            body = state.blob[start : end + 1]
            self.send_response(206 if match else 200)
            if match:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(state.blob)}")
            if state.mode == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for off in range(0, len(body), 1 << 16):
                    piece = body[off : off + (1 << 16)]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.mode == "trickle":
                self.wfile.write(body[: state.fault_after])
                self.wfile.flush()
                for i in range(state.fault_after, len(body)):
                    if state.release.wait(timeout=TRICKLE_EVERY):  # released: stop trickling
                        break
                    try:
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                    except OSError:  # the client went away
                        break
                    state.trickled += 1
                self.close_connection = True
                return
            if state.mode in ("drop", "stall"):
                self.wfile.write(body[: state.fault_after])
                self.wfile.flush()
                if state.mode == "stall":
                    state.release.wait(timeout=10)
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@contextmanager
def serve(
    blob: bytes, mode: str = "normal", fault_after: int = 0, tls: ssl.SSLContext | None = None
) -> Iterator[RangeFileServer]:
    """Run the server on an ephemeral 127.0.0.1 port for the duration of the block."""
    state = RangeFileServer(blob=blob, mode=mode, fault_after=fault_after)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    if tls is not None:  # the handshake runs in the handler's thread, on its first read
        server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    scheme = "https" if tls is not None else "http"
    state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/blob"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


__all__ = ["RangeFileServer", "serve"]
