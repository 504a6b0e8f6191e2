"""A stand-in for Oracle OCI Object Storage, good enough for the ``oci`` SDK.

It serves one namespace (one "region" or tenancy per instance) on 127.0.0.1 in a
thread and implements what modelferry uses: namespace lookup, bucket HEAD/GET,
paged listing (``nextStartWith``), object PUT/GET/HEAD/DELETE with ranges,
``Content-MD5`` / ``opc-multipart-md5`` and ``opc-meta-*`` metadata, and
multipart create / upload part / commit / abort / list. Request signatures are
ignored. Errors are JSON ``{"code", "message"}`` like the real service.

Test hooks: :meth:`OracleServer.create_bucket`, :meth:`put`, :meth:`corrupt`,
``fail_next`` (inject error responses) and ``requests`` (a log of calls).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@dataclass
class StoredObject:
    data: bytes
    md5: str | None = None  # Content-MD5 (base64) for single-part objects
    multipart_md5: str | None = None  # "base64-N" for multipart objects
    etag: str = field(default_factory=lambda: str(uuid.uuid4()))
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class PendingUpload:
    object_name: str
    metadata: dict[str, str]
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # num -> (data, etag)


_OBJ_RE = re.compile(r"^/n/(?P<ns>[^/]+)/b/(?P<bucket>[^/]+)(?:/(?P<kind>[ou])(?:/(?P<name>.+))?)?$")


class OracleServer:
    """One namespace on an ephemeral port. Use as a context manager."""

    def __init__(self, namespace: str = "testns", page_size: int = 1000) -> None:
        self.namespace = namespace
        self.page_size = page_size
        self.buckets: dict[str, dict[str, StoredObject]] = {}
        self.uploads: dict[str, PendingUpload] = {}
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self.obo_tokens: list[str | None] = []  # the opc-obo-token header of each request (None: absent)
        self.signed_headers: list[list[str]] = []  # the headers each request's signature covers
        self.fail_next: list[tuple[int, str]] = []  # (status, code) answered to the next requests
        self.trickle: tuple[int, float] | None = None  # object bodies in (bytes, seconds apart) pieces
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- test hooks ---------------------------------------------------------------

    def create_bucket(self, name: str) -> None:
        self.buckets.setdefault(name, {})

    def put(self, bucket: str, name: str, data: bytes, *, parts: int = 1) -> StoredObject:
        """Store an object directly; ``parts > 1`` makes it look like a multipart upload."""
        if parts <= 1:
            obj = StoredObject(data=data, md5=b64md5(data))
        else:
            size = -(-len(data) // parts)
            digests = b"".join(hashlib.md5(data[i : i + size]).digest() for i in range(0, len(data), size))
            count = len(range(0, len(data), size))
            obj = StoredObject(data=data, multipart_md5=f"{b64md5(digests)}-{count}")
            obj.metadata["opc-meta-modelferry-part-size"] = str(size)
        with self.lock:
            self.buckets[bucket][name] = obj
        return obj

    def corrupt(self, bucket: str, name: str) -> None:
        """Flip a byte but keep the recorded checksums (bit rot / a lying server)."""
        with self.lock:
            obj = self.buckets[bucket][name]
            data = bytearray(obj.data)
            data[len(data) // 2] ^= 0xFF
            obj.data = bytes(data)

    def get(self, bucket: str, name: str) -> bytes:
        return self.buckets[bucket][name].data

    @property
    def endpoint(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> OracleServer:
        server = self

        class Handler(_Handler):
            store = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="oracle-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> OracleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and "Expect: 100-continue", as the SDK sends
    store: OracleServer

    def log_message(self, format: str, *args: Any) -> None:
        return None

    # -- plumbing -------------------------------------------------------------------

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("opc-request-id", uuid.uuid4().hex)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            trickle = self.store.trickle if status in (200, 206) and self.command == "GET" else None
            if trickle is None or "/o/" not in self.path:
                self.wfile.write(body)
                return
            size, pause = trickle
            for start in range(0, len(body), size):  # a server that sends a few bytes at a time
                self.wfile.write(body[start : start + size])
                self.wfile.flush()
                time.sleep(pause)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"code": code, "message": message})

    def _dispatch(self) -> None:
        store = self.store
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with store.lock:
            store.requests.append((self.command, url.path))
            store.obo_tokens.append(self.headers.get("opc-obo-token"))
            signed = re.search(r'headers="([^"]*)"', self.headers.get("Authorization") or "")
            store.signed_headers.append(signed.group(1).split() if signed else [])
            injected = store.fail_next.pop(0) if store.fail_next else None
        body = self._body() if self.command in ("PUT", "POST") else b""
        if injected is not None:
            self._error(injected[0], injected[1], "injected failure")
            return
        if url.path in ("/n", "/n/"):
            self._json(200, store.namespace)
            return
        match = _OBJ_RE.match(url.path)
        if not match:
            self._error(404, "NotFound", f"no route for {url.path}")
            return
        if unquote(match["ns"]) != store.namespace:
            self._error(404, "BucketNotFound", f"namespace {match['ns']} not found")
            return
        bucket_name = unquote(match["bucket"])
        bucket = store.buckets.get(bucket_name)
        if bucket is None:
            self._error(404, "BucketNotFound", f"Either the bucket named '{bucket_name}' does not exist")
            return
        kind, name = match["kind"], unquote(match["name"] or "")
        if kind is None:
            self._json(200, {"name": bucket_name, "namespace": store.namespace}, {"ETag": "bucket-etag"})
        elif kind == "o" and not name:
            self._list(bucket, query)
        elif kind == "o":
            self._object(bucket, bucket_name, name, body)
        else:
            self._multipart(bucket, name, query, body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _dispatch

    # -- listing ----------------------------------------------------------------------

    def _list(self, bucket: dict[str, StoredObject], query: dict[str, str]) -> None:
        prefix = query.get("prefix", "")
        start = query.get("start", "")
        limit = min(int(query.get("limit", self.store.page_size)), self.store.page_size)
        fields = set(query.get("fields", "name").split(","))
        with self.store.lock:
            names = sorted(n for n in bucket if n.startswith(prefix) and n >= start)
            page, rest = names[:limit], names[limit:]
            objects = []
            for n in page:
                obj = bucket[n]
                entry: dict[str, Any] = {"name": n}
                if "size" in fields:
                    entry["size"] = len(obj.data)
                if "md5" in fields:
                    entry["md5"] = obj.md5 or obj.multipart_md5
                if "etag" in fields:
                    entry["etag"] = obj.etag
                if "timeCreated" in fields:
                    entry["timeCreated"] = "2026-01-01T00:00:00.000Z"
                objects.append(entry)
        payload: dict[str, Any] = {"objects": objects, "prefixes": []}
        if rest:
            payload["nextStartWith"] = rest[0]
        self._json(200, payload)

    # -- objects ----------------------------------------------------------------------

    def _headers_for(self, obj: StoredObject) -> dict[str, str]:
        headers = {"ETag": obj.etag, "Content-Type": "application/octet-stream", **obj.metadata}
        if obj.md5:
            headers["Content-MD5"] = obj.md5
        if obj.multipart_md5:
            headers["opc-multipart-md5"] = obj.multipart_md5
        return headers

    def _object(self, bucket: dict[str, StoredObject], bucket_name: str, name: str, body: bytes) -> None:
        if self.command == "PUT":
            md5 = b64md5(body)
            sent = self.headers.get("Content-MD5")
            if sent and sent != md5:
                self._error(400, "InvalidContentMD5", f"Content-MD5 {sent} does not match the body ({md5})")
                return
            meta = {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("opc-meta-")}
            obj = StoredObject(data=body, md5=md5, metadata=meta)
            with self.store.lock:
                bucket[name] = obj
            self._send(200, b"", {"ETag": obj.etag, "opc-content-md5": md5})
            return
        with self.store.lock:
            obj = bucket.get(name)  # type: ignore[assignment]
        if obj is None:
            self._error(404, "ObjectNotFound", f"The object '{name}' was not found in the bucket '{bucket_name}'")
            return
        if self.command == "DELETE":
            with self.store.lock:
                bucket.pop(name, None)
            self._send(204)
            return
        headers = self._headers_for(obj)
        data = obj.data
        rng = self.headers.get("Range")
        if rng and self.command == "GET":
            m = re.match(r"bytes=(\d+)-(\d*)$", rng)
            if not m or int(m[1]) >= len(data):
                self._error(416, "InvalidRange", f"bad range {rng}")
                return
            first = int(m[1])
            last = min(int(m[2]) if m[2] else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            headers.pop("Content-MD5", None)
            self._send(206, data[first : last + 1], headers)
            return
        if self.command == "HEAD":
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return
        self._send(200, data, headers)

    # -- multipart --------------------------------------------------------------------

    def _multipart(self, bucket: dict[str, StoredObject], name: str, query: dict[str, str], body: bytes) -> None:
        store = self.store
        if not name:
            if self.command == "POST":
                details = json.loads(body or b"{}")
                upload_id = uuid.uuid4().hex
                meta = {k.lower(): str(v) for k, v in (details.get("metadata") or {}).items()}
                with store.lock:
                    store.uploads[upload_id] = PendingUpload(details["object"], meta)
                self._json(
                    200,
                    {
                        "namespace": store.namespace,
                        "bucket": "",
                        "object": details["object"],
                        "uploadId": upload_id,
                        "timeCreated": "2026-01-01T00:00:00.000Z",
                    },
                )
                return
            with store.lock:
                items = [
                    {"object": u.object_name, "uploadId": uid, "namespace": store.namespace, "bucket": ""}
                    for uid, u in store.uploads.items()
                ]
            self._json(200, items)
            return
        upload_id = query.get("uploadId", "")
        with store.lock:
            upload = store.uploads.get(upload_id)
        if upload is None or upload.object_name != name:
            self._error(404, "NoSuchUpload", f"upload {upload_id} for {name} not found")
            return
        if self.command == "PUT":
            md5 = b64md5(body)
            sent = self.headers.get("Content-MD5")
            if sent and sent != md5:
                self._error(400, "InvalidContentMD5", f"part Content-MD5 {sent} does not match the body")
                return
            etag = uuid.uuid4().hex
            with store.lock:
                upload.parts[int(query["uploadPartNum"])] = (body, etag)
            self._send(200, b"", {"ETag": etag, "opc-content-md5": md5})
        elif self.command == "DELETE":
            with store.lock:
                store.uploads.pop(upload_id, None)
            self._send(204)
        elif self.command == "GET":
            parts = [
                {"partNumber": n, "etag": e, "md5": b64md5(d), "size": len(d)}
                for n, (d, e) in sorted(upload.parts.items())
            ]
            self._json(200, parts)
        else:  # POST: commit
            details = json.loads(body or b"{}")
            wanted = sorted((p["partNum"], p["etag"]) for p in details.get("partsToCommit", []))
            chunks, digests = [], b""
            for num, etag in wanted:
                part = upload.parts.get(num)
                if part is None or part[1] != etag:
                    self._error(400, "InvalidPart", f"part {num} missing or etag mismatch")
                    return
                chunks.append(part[0])
                digests += hashlib.md5(part[0]).digest()
            obj = StoredObject(
                data=b"".join(chunks),
                multipart_md5=f"{b64md5(digests)}-{len(wanted)}",
                metadata=upload.metadata,
            )
            with store.lock:
                bucket[name] = obj
                store.uploads.pop(upload_id, None)
            self._send(200, b"", {"ETag": obj.etag, "opc-multipart-md5": obj.multipart_md5 or ""})


def object_url(endpoint: str, namespace: str, bucket: str, name: str) -> str:
    """The URL of one object (names percent-encoded, ``/`` as ``%2F``)."""
    return f"{endpoint}/n/{namespace}/b/{bucket}/o/{quote(name, safe='')}"
