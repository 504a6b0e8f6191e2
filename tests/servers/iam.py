"""A stand-in for IBM IAM's ``POST /identity/token`` on 127.0.0.1 that counts exchanges.

Grants: API key (``urn:ibm:params:oauth:grant-type:apikey``), one-time passcode
(``urn:ibm:params:oauth:grant-type:passcode``, accepted once only, like IAM) and
``refresh_token``. Tokens live ``expires_in`` seconds (tests shorten it).
"""

from __future__ import annotations

import collections
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class IAMState:
    def __init__(self, api_keys: set[str], passcodes: set[str]) -> None:
        self.api_keys = api_keys
        self.passcodes = passcodes
        self.used_passcodes: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.grants: collections.Counter[str] = collections.Counter()
        self.expires_in = 3600
        self.fail_status: int | None = None
        self.lock = threading.Lock()

    def issue(self) -> dict[str, Any]:
        refresh = "rt-" + secrets.token_hex(8)
        self.refresh_tokens.add(refresh)
        return {
            "access_token": "at-" + secrets.token_hex(12),
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }


class IAMServer:
    """Runs the stand-in in a thread; ``url`` is its base (pass it as ``iam_endpoint``)."""

    def __init__(self, *, api_keys: set[str] | None = None, passcodes: set[str] | None = None) -> None:
        self.state = IAMState(api_keys or set(), passcodes or set())
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                if self.path != "/identity/token":
                    self._answer(404, {"errorCode": "BXNIM0404E"})
                    return
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                grant = form.get("grant_type", "")
                with state.lock:
                    state.grants[grant] += 1
                    if state.fail_status is not None:
                        self._answer(state.fail_status, {"errorCode": "BXNIM0500E"})
                        return
                    ok = False
                    if grant == "urn:ibm:params:oauth:grant-type:apikey":
                        ok = form.get("apikey") in state.api_keys
                    elif grant == "urn:ibm:params:oauth:grant-type:passcode":
                        code = form.get("passcode", "")
                        ok = code in state.passcodes and code not in state.used_passcodes
                        state.used_passcodes.add(code)
                    elif grant == "refresh_token":
                        ok = form.get("refresh_token") in state.refresh_tokens
                    if not ok:
                        self._answer(400, {"errorCode": "BXNIM0415E", "errorMessage": "Provided credential invalid"})
                        return
                    self._answer(200, state.issue())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> IAMServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
