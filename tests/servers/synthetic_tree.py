"""A tree of N generated files behind the Hub API and S3 path-style wire formats, made up on the fly.

Nothing is stored per file: file ``n`` is ``d{n // 1000:04d}/f{n:07d}.bin`` with a few bytes derived
from ``n``, so listings of a million files cost the server no memory (tests and benchmarks of peak
RSS in the client). What it answers:

- Hub: ``GET /api/models/{org}/{name}[/revision/{rev}]`` and ``.../tree/{rev}?recursive=true&cursor=N``
  (pages of :attr:`page_size` with ``Link: rel="next"``; each file's git blob oid), and
  ``GET|HEAD /{org}/{name}/resolve/{rev}/{path}`` with ranges.
- S3 (any bucket name; objects live under any prefix): ``HEAD /{bucket}``, ``GET /{bucket}?list-type=2``
  (1,000 keys a page, MD5 ETags), ``GET|HEAD /{bucket}/{key}`` with ranges. Writes (``PUT``, multipart)
  are accepted and counted but not kept, except small objects under ``.modelferry/``, kept for the
  next listing; ``DELETE`` answers 204.

A bucket whose name starts with ``full`` lists every generated file under whatever prefix is
asked (a target that already holds the tree); any other bucket holds them under ``model/``.

    python -m tests.servers.synthetic_tree --files 1000000 --port 8123
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import threading
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

SHA = "0123456789abcdef0123456789abcdef01234567"
PAGE = 1000


def path_of(n: int) -> str:
    return f"d{n // 1000:04d}/f{n:07d}.bin"


def index_of(path: str) -> int | None:
    if len(path) != 18 or not path.startswith("d") or not path.endswith(".bin"):
        return None
    try:
        n = int(path[7:14])
    except ValueError:
        return None
    return n if path_of(n) == path else None


def content(n: int) -> bytes:
    return (f"{n:07d}\n".encode() * 8)[: 4 + n % 61]


def blob_oid(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class SyntheticTree:
    """The server; ``with SyntheticTree(files) as tree: tree.url``."""

    def __init__(self, files: int, *, port: int = 0, page_size: int = PAGE) -> None:
        self.files = files
        self.port = port
        self.page_size = page_size
        self.written = 0  # bytes received by PUT / UploadPart
        self.kept: dict[tuple[str, str], bytes] = {}
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SyntheticTree:
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, name="synthetic-tree", daemon=True)
        self._thread.start()
        started.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(30)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_get("/api/models/{org}/{name}/tree/{rev}", self._tree)
        app.router.add_get("/api/models/{org}/{name}/revision/{rev}", self._info)
        app.router.add_get("/api/models/{org}/{name}", self._info)
        app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{path:.+}", self._resolve)
        app.router.add_route("*", "/{bucket}", self._bucket)
        app.router.add_route("*", "/{bucket}/{key:.+}", self._object)
        return app

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    # -- Hub ---------------------------------------------------------------------------

    async def _info(self, request: web.Request) -> web.StreamResponse:
        repo = f"{request.match_info['org']}/{request.match_info['name']}"
        return web.json_response({"id": repo, "sha": SHA, "siblings": [], "private": False})

    async def _tree(self, request: web.Request) -> web.StreamResponse:
        cursor = int(request.query.get("cursor", "0"))
        end = min(self.files, cursor + self.page_size)
        page = []
        for n in range(cursor, end):
            data = content(n)
            page.append({"type": "file", "oid": blob_oid(data), "size": len(data), "path": path_of(n)})
        headers = {}
        if end < self.files:
            headers["Link"] = f'<{request.url.update_query(cursor=str(end))}>; rel="next"'
        return web.json_response(page, headers=headers)

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        n = index_of(request.match_info["path"])
        if n is None or n >= self.files:
            return web.json_response({"error": "not found"}, status=404, headers={"X-Error-Code": "EntryNotFound"})
        data = content(n)
        oid = blob_oid(data)
        headers = {"X-Repo-Commit": SHA, "ETag": f'"{oid}"', "X-Linked-Size": str(len(data))}
        return self._body(request, data, headers)

    # -- S3 ----------------------------------------------------------------------------

    @staticmethod
    def _base(bucket: str, prefix: str) -> str | None:
        """The key prefix the generated files are listed under for a listing of ``prefix``, or None."""
        if prefix.endswith(".modelferry/partial/"):
            return None
        if bucket.startswith("full"):
            return prefix if not prefix or prefix.endswith("/") else prefix + "/"
        return "model/" if prefix in ("", "model/") else None

    async def _bucket(self, request: web.Request) -> web.StreamResponse:
        bucket = request.match_info["bucket"]
        if request.method == "HEAD":
            return web.Response(status=200)
        if request.query.get("list-type") != "2":
            return web.Response(status=400, text="only ListObjectsV2")
        prefix = request.query.get("prefix", "")
        base = self._base(bucket, prefix)
        listed = base is not None
        limit = min(int(request.query.get("max-keys", "1000")), 1000)
        token = request.query.get("continuation-token") or request.query.get("start-after")
        start = int(token) if token and token.isdigit() else 0
        keys: list[tuple[str, int, str]] = []
        if start == 0:
            for (b, key), data in sorted(self.kept.items()):
                if b == bucket and key.startswith(prefix):
                    keys.append((key, len(data), hashlib.md5(data).hexdigest()))
        end = start
        if base is not None:
            end = min(self.files, start + limit)
            for n in range(start, end):
                data = content(n)
                keys.append((base + path_of(n), len(data), hashlib.md5(data).hexdigest()))
        truncated = end < self.files and listed
        body = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(keys)}</KeyCount>",
            f"<MaxKeys>{limit}</MaxKeys><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
        ]
        if truncated:
            body.append(f"<NextContinuationToken>{end}</NextContinuationToken>")
        body.extend(
            f"<Contents><Key>{escape(k)}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>"
            f'<ETag>"{etag}"</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>'
            for k, size, etag in keys
        )
        body.append("</ListBucketResult>")
        return web.Response(text="".join(body), content_type="application/xml")

    async def _object(self, request: web.Request) -> web.StreamResponse:
        bucket, key = request.match_info["bucket"], request.match_info["key"]
        if request.method in ("PUT", "POST"):
            return await self._write(request, bucket, key)
        if request.method == "DELETE":
            self.kept.pop((bucket, key), None)
            return web.Response(status=204)
        data = self.kept.get((bucket, key))
        if data is None:
            n = index_of(key[-18:])
            if not bucket.startswith("full") and key[:-18] != "model/":
                n = None
            if n is None or n >= self.files:
                return web.Response(
                    status=404, text="<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml"
                )
            data = content(n)
        etag = hashlib.md5(data).hexdigest()
        return self._body(request, data, {"ETag": f'"{etag}"', "Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT"})

    async def _write(self, request: web.Request, bucket: str, key: str) -> web.StreamResponse:
        if "uploads" in request.query:
            xml = f"<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{escape(key)}</Key><UploadId>u1</UploadId></InitiateMultipartUploadResult>"
            return web.Response(text=xml, content_type="application/xml")
        if request.method == "POST" and "uploadId" in request.query:
            await request.read()
            xml = f'<CompleteMultipartUploadResult><Key>{escape(key)}</Key><ETag>"{"0" * 32}-1"</ETag></CompleteMultipartUploadResult>'
            return web.Response(text=xml, content_type="application/xml")
        size = 0
        md5 = hashlib.md5()
        kept = bytearray()
        async for chunk in request.content.iter_any():
            size += len(chunk)
            md5.update(chunk)
            if ".modelferry/" in key and size <= (1 << 20):
                kept += chunk
        self.written += size
        if ".modelferry/" in key and "partNumber" not in request.query and size <= (1 << 20):
            self.kept[(bucket, key)] = bytes(kept)
        return web.Response(status=200, headers={"ETag": f'"{md5.hexdigest()}"'})

    # -- bodies ------------------------------------------------------------------------

    @staticmethod
    def _body(request: web.Request, data: bytes, headers: dict[str, str]) -> web.StreamResponse:
        headers = {**headers, "Accept-Ranges": "bytes"}
        rng = request.headers.get("Range")
        status = 200
        if rng and rng.startswith("bytes="):
            first, _, last = rng[6:].partition("-")
            start, stop = int(first), min(len(data) - 1, int(last) if last else len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{stop}/{len(data)}"
            data, status = data[start : stop + 1], 206
        if request.method == "HEAD":
            return web.Response(status=status, headers={**headers, "Content-Length": str(len(data))})
        return web.Response(status=status, body=data, headers=headers, content_type="application/octet-stream")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    tree = SyntheticTree(args.files, port=args.port)
    loop = asyncio.new_event_loop()

    async def serve() -> None:
        runner = web.AppRunner(tree.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        print(f"listening on {runner.addresses[0][1]}", flush=True)
        await asyncio.Event().wait()

    loop.run_until_complete(serve())


if __name__ == "__main__":
    main()


__all__: list[Any] = ["SyntheticTree", "content", "path_of"]
