"""An S3 multipart stand-in whose handling of ``x-amz-checksum-crc32`` is chosen per test.

- ``verify``: as AWS S3 does, a part whose body does not match its CRC32 (or Content-MD5) is refused
  with BadDigest, and the CRC32 is answered in the part's response.
- ``ignore``: as rclone's and other S3 servers do, the CRC32 header is neither checked nor answered;
  Content-MD5 still is.
- ``wrong``: answers a CRC32 other than the one sent (a store that kept other bytes).
- ``corrupt``: one byte of every part is changed on the way in, before any check (Content-MD5 then
  fails with BadDigest; without it the part is kept and its ETag is the MD5 of the changed bytes).
- ``kms``: as SSE-KMS does, answers ``x-amz-server-side-encryption: aws:kms`` and an ETag that is not
  the body's MD5.

Parts are kept in memory and joined on completion; every part request's checksum headers are recorded
(``parts``), and the completion body (``completions``). Signatures are not checked.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
import zlib
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit


def _crc(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ChecksumS3

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_POST(self) -> None:
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        body = self._body()
        if "uploads" in query:
            self.server.created.append(dict(self.headers))
            xml = "<InitiateMultipartUploadResult><UploadId>up1</UploadId></InitiateMultipartUploadResult>"
            return self._answer(200, xml.encode())
        self.server.completions.append(body.decode())
        xml = '<CompleteMultipartUploadResult><ETag>"done-1"</ETag></CompleteMultipartUploadResult>'
        return self._answer(200, xml.encode())

    def do_PUT(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        data = self._body()
        crc, md5 = self.headers.get("x-amz-checksum-crc32"), self.headers.get("Content-MD5")
        number = int(query["partNumber"][0])
        self.server.parts.append((number, crc, md5))
        mode = self.server.mode
        if mode == "corrupt":
            data = data[:-1] + bytes([data[-1] ^ 1])
        if md5 is not None and md5 != base64.b64encode(hashlib.md5(data).digest()).decode():
            return self._answer(400, b"<Error><Code>BadDigest</Code></Error>")
        headers = {"ETag": f'"{hashlib.md5(data).hexdigest()}"'}
        if mode == "kms":
            headers = {"ETag": '"0123456789abcdef0123456789abcdef"', "x-amz-server-side-encryption": "aws:kms"}
        if crc is not None and mode == "verify":
            if crc != _crc(data):
                return self._answer(400, b"<Error><Code>BadDigest</Code></Error>")
            headers["x-amz-checksum-crc32"] = crc
        elif crc is not None and mode == "wrong":
            headers["x-amz-checksum-crc32"] = _crc(data + b"x")
        self.server.stored[number] = data
        return self._answer(200, b"", headers)

    def do_DELETE(self) -> None:
        self.server.aborted += 1
        self._answer(204)

    def log_message(self, *_: Any) -> None:
        pass


class ChecksumS3(http.server.ThreadingHTTPServer):
    """The stand-in on a free port; ``url`` is its endpoint. Use as a context manager."""

    daemon_threads = True
    modes: ClassVar[tuple[str, ...]] = ("verify", "ignore", "wrong", "corrupt", "kms")

    def __init__(self, mode: str) -> None:
        if mode not in self.modes:
            raise ValueError(mode)
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode
        self.parts: list[tuple[int, str | None, str | None]] = []  # (part number, CRC32, Content-MD5) per request
        self.stored: dict[int, bytes] = {}
        self.created: list[dict[str, str]] = []
        self.completions: list[str] = []
        self.aborted = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> ChecksumS3:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()
        self.server_close()
