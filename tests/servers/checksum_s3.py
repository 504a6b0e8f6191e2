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

Enough of the rest of S3 for a whole sync with resume (path-style keys): PutObject, GetObject,
HeadObject, DeleteObject, ListObjectsV2 (one page), ListParts (with each part's CRC32 where one was
kept, as AWS lists them), and CompleteMultipartUpload storing the joined parts as the object.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
import zlib
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape


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

    def _key(self) -> str:
        return unquote(urlsplit(self.path).path).lstrip("/")  # bucket/key

    def do_POST(self) -> None:
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        body = self._body()
        if "uploads" in query:
            self.server.created.append(dict(self.headers))
            self.server.upload_keys["up1"] = self._key()
            xml = "<InitiateMultipartUploadResult><UploadId>up1</UploadId></InitiateMultipartUploadResult>"
            return self._answer(200, xml.encode())
        self.server.completions.append(body.decode())
        self.server.objects[self._key()] = b"".join(self.server.stored[n] for n in sorted(self.server.stored))
        xml = '<CompleteMultipartUploadResult><ETag>"done-1"</ETag></CompleteMultipartUploadResult>'
        return self._answer(200, xml.encode())

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        if "uploadId" in query:
            return self._answer(200, self._list_parts().encode())
        if "list-type" in query:
            return self._answer(200, self._list_objects(self._key(), query.get("prefix", [""])[0]).encode())
        data = self.server.objects.get(self._key())
        if data is None:
            return self._answer(404, b"<Error><Code>NoSuchKey</Code></Error>")
        return self._answer(200, data, {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def do_HEAD(self) -> None:
        if "/" not in self._key():  # HeadBucket: every bucket exists
            return self._answer(200)
        data = self.server.objects.get(self._key())
        self.send_response(404 if data is None else 200)
        self.send_header("Content-Length", str(0 if data is None else len(data)))
        if data is not None:
            self.send_header("ETag", f'"{hashlib.md5(data).hexdigest()}"')
        self.end_headers()

    def _list_parts(self) -> str:
        rows = []
        for number in sorted(self.server.stored):
            data = self.server.stored[number]
            crc = self.server.stored_crcs.get(number)
            rows.append(
                f"<Part><PartNumber>{number}</PartNumber><ETag>&quot;{hashlib.md5(data).hexdigest()}&quot;</ETag>"
                f"<Size>{len(data)}</Size>{f'<ChecksumCRC32>{crc}</ChecksumCRC32>' if crc else ''}</Part>"
            )
        return f"<ListPartsResult><IsTruncated>false</IsTruncated>{''.join(rows)}</ListPartsResult>"

    def _list_objects(self, bucket: str, prefix: str) -> str:
        rows = [
            f"<Contents><Key>{escape(key[len(bucket) + 1 :])}</Key><Size>{len(data)}</Size>"
            f"<ETag>&quot;{hashlib.md5(data).hexdigest()}&quot;</ETag>"
            "<LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>"
            for key, data in sorted(self.server.objects.items())
            if key.startswith(f"{bucket}/{prefix}")
        ]
        return (
            f"<ListBucketResult><IsTruncated>false</IsTruncated><KeyCount>{len(rows)}</KeyCount>"
            f"{''.join(rows)}</ListBucketResult>"
        )

    def do_PUT(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        data = self._body()
        if "partNumber" not in query:  # PutObject
            self.server.objects[self._key()] = data
            return self._answer(200, b"", {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})
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
            self.server.stored_crcs[number] = crc
        elif crc is not None and mode == "wrong":
            headers["x-amz-checksum-crc32"] = _crc(data + b"x")
        self.server.stored[number] = data
        return self._answer(200, b"", headers)

    def do_DELETE(self) -> None:
        if "uploadId" in parse_qs(urlsplit(self.path).query):
            self.server.aborted += 1
        else:
            self.server.objects.pop(self._key(), None)
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
        self.stored_crcs: dict[int, str] = {}  # part number -> the CRC32 kept with it (verify mode)
        self.objects: dict[str, bytes] = {}  # "bucket/key" -> bytes
        self.upload_keys: dict[str, str] = {}
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
