"""A small Hugging Face Hub protocol server (aiohttp, background thread) with fault injection.

It speaks what huggingface_hub 2.4 and modelferry's ranged fetcher call:

- ``GET /api/{models|datasets}/{repo}[/revision/{rev}]`` -> ``{id, sha, siblings}``
- ``GET /api/{models|datasets}/{repo}/tree/{rev}[/{path}]?recursive=&cursor=`` (paged by ``Link: rel="next"``)
- ``HEAD|GET /[datasets/]{repo}/resolve/{rev}/{path}`` with ``Range`` (206 + ``Content-Range``),
  ``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``, ``X-Linked-Size``; optionally a 302 to a second
  "CDN" port (another origin).
- errors: 404 + ``X-Error-Code: RepoNotFound|RevisionNotFound|EntryNotFound|GatedRepo`` (401 for a
  gated repo asked without a token).

Fault knobs (see :class:`Faults`) drop connections mid-body, throttle with ``Retry-After``, corrupt
bytes, or slow the body down; every file request is logged so tests can assert what was fetched.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

CHUNK = 64 * 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class HubRepo:
    """A repo built from bytes in memory (or files on disk via :meth:`from_dir`)."""

    repo_id: str
    files: dict[str, bytes]
    repo_type: str = "model"
    gated: bool = False
    lfs_threshold: int = 1024
    branches: dict[str, str] = field(default_factory=dict)
    extra_tree: list[dict[str, Any]] = field(default_factory=list)  # raw entries (e.g. hostile names)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.repo_id.encode())
        for path in sorted(self.files):
            digest.update(path.encode() + hashlib.sha256(self.files[path]).digest())
        self.sha = digest.hexdigest()
        self.branches.setdefault("main", self.sha)
        self._entries: dict[str, dict[str, Any]] = {}  # hashing a big file once, not per request

    @classmethod
    def from_dir(cls, repo_id: str, root: Path, **kw: Any) -> HubRepo:
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        return cls(repo_id, files, **kw)

    def commit_for(self, rev: str) -> str | None:
        if rev == self.sha:
            return self.sha
        return self.branches.get(rev)

    def entry(self, path: str) -> dict[str, Any]:
        cached = self._entries.get(path)
        if cached is None:
            cached = self._entries[path] = self._make_entry(path)
        return cached

    def _make_entry(self, path: str) -> dict[str, Any]:
        data = self.files[path]
        out: dict[str, Any] = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
        if len(data) >= self.lfs_threshold:
            sha = hashlib.sha256(data).hexdigest()
            out["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
            out["oid"] = hashlib.sha1(sha.encode()).hexdigest()
        return out

    def tree(self, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        base = prefix.strip("/")
        entries: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for path in sorted(self.files):
            if base and not path.startswith(base + "/"):
                continue
            rel = path[len(base) + 1 :] if base else path
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                d = "/".join(([base] if base else []) + parts[:depth])
                if recursive or depth == 1:
                    dirs.add(d)
            if recursive or len(parts) == 1:
                entries.append(self.entry(path))
        entries += [{"type": "directory", "path": d, "oid": "0" * 40, "size": 0} for d in sorted(dirs)]
        return entries + list(self.extra_tree)


@dataclass
class Faults:
    """Fault injection for file GETs; each ``*_count`` is how many requests are affected."""

    drop_after: int = 0  # close the connection after this many body bytes ...
    drop_count: int = 0  # ... for the first N GETs
    throttle_status: int = 429
    throttle_retry_after: int = 1
    throttle_count: int = 0
    corrupt: str | None = None  # "once" or "always"
    corrupt_path: str | None = None  # only this file (None: any)
    slow_delay: float = 0.0  # seconds between 64 KiB chunks
    trickle: int = 0  # send the body in pieces of this many bytes (with slow_delay between): a trickling server
    ignore_range: bool = False  # answer 200 with the whole body
    api_error_status: int = 503  # metadata (info/tree) calls answer this ...
    api_error_count: int = 0  # ... for the first N of them


@dataclass
class Req:
    method: str
    path: str  # file path in the repo
    rev: str  # revision as written in the URL
    range: tuple[int, int] | None
    status: int
    time: float
    authorization: str | None
    port: int


class FakeHub:
    """The server. ``with FakeHub() as hub: hub.add(HubRepo(...)); hub.url``."""

    def __init__(self, *, page_size: int = 3, cdn_redirect: bool = False, token: str | None = None) -> None:
        self.repos: dict[tuple[str, str], HubRepo] = {}
        self.page_size = page_size
        self.cdn_redirect = cdn_redirect
        self.token = token  # gated repos accept only this bearer token
        self.faults = Faults()
        self.requests: list[Req] = []
        self.api_calls: list[str] = []
        self._lock = threading.Lock()
        self._corrupted: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fake-hub")
        self.port = 0
        self.cdn_port = 0

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> FakeHub:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        app = web.Application()
        for prefix, kind in (("/api/datasets", "dataset"), ("/api/models", "model")):
            app.router.add_get(prefix + "/{org}/{name}/tree/{rev}{sub:(/.*)?}", self._tree(kind))
            app.router.add_get(prefix + "/{org}/{name}/revision/{rev}", self._info(kind))
            app.router.add_get(prefix + "/{org}/{name}", self._info(kind))
        app.router.add_route("*", "/cdn/{kind}/{org}/{name}/{rev}/{path:.+}", self._cdn)
        app.router.add_route("*", "/datasets/{org}/{name}/resolve/{rev}/{path:.+}", self._resolve("dataset"))
        app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{path:.+}", self._resolve("model"))
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        main, cdn = web.TCPSite(self._runner, "127.0.0.1", 0), web.TCPSite(self._runner, "127.0.0.1", 0)
        await main.start()
        await cdn.start()
        self.port = main._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.cdn_port = cdn._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, repo: HubRepo) -> HubRepo:
        self.repos[(repo.repo_type, repo.repo_id)] = repo
        return repo

    def file_gets(self, path: str | None = None) -> list[Req]:
        """GETs of file bytes (either port; redirects left out), optionally of one file."""
        with self._lock:
            return [
                r for r in self.requests if r.method == "GET" and r.status != 302 and (path is None or r.path == path)
            ]

    # -- helpers -----------------------------------------------------------------

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status, headers={"X-Error-Code": code})

    def _lookup(self, kind: str, request: web.Request, rev: str | None) -> tuple[HubRepo, str] | web.Response:
        repo_id = f"{request.match_info['org']}/{request.match_info['name']}"
        repo = self.repos.get((kind, repo_id))
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        if repo.gated:
            auth = request.headers.get("Authorization")
            if auth is None:
                return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted")
            if auth != f"Bearer {self.token}":
                return self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted")
        sha = repo.commit_for(rev or "main")
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo, sha

    def _info(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            self.api_calls.append(f"info {request.path}")
            if self._take("api_error_count"):
                return web.Response(status=self.faults.api_error_status, headers={"Retry-After": "0"})
            found = self._lookup(kind, request, request.match_info.get("rev"))
            if isinstance(found, web.Response):
                return found
            repo, sha = found
            siblings = [{"rfilename": p} for p in sorted(repo.files)]
            return web.json_response({"id": repo.repo_id, "sha": sha, "siblings": siblings, "private": False})

        return handler

    def _tree(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            self.api_calls.append(f"tree {request.path_qs}")
            if self._take("api_error_count"):
                return web.Response(status=self.faults.api_error_status, headers={"Retry-After": "0"})
            found = self._lookup(kind, request, request.match_info["rev"])
            if isinstance(found, web.Response):
                return found
            repo, _sha = found
            recursive = request.query.get("recursive", "false").lower() == "true"
            entries = repo.tree(request.match_info.get("sub", ""), recursive)
            cursor = int(request.query.get("cursor", "0"))
            page = entries[cursor : cursor + self.page_size]
            headers = {}
            if cursor + self.page_size < len(entries):
                nxt = request.url.update_query(cursor=str(cursor + self.page_size))
                headers["Link"] = f'<{nxt}>; rel="next"'
            return web.json_response(page, headers=headers)

        return handler

    def _resolve(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            found = self._lookup(kind, request, request.match_info["rev"])
            if isinstance(found, web.Response):
                return found
            repo, sha = found
            path = request.match_info["path"]
            if path not in repo.files:
                return self._error(404, "EntryNotFound", f"{path} not found")
            if self.cdn_redirect and request.method == "GET":
                self._log(request, path, None, 302)
                location = f"http://127.0.0.1:{self.cdn_port}/cdn/{kind}/{repo.repo_id}/{sha}/{path}"
                return web.Response(status=302, headers={**self._file_headers(repo, sha, path), "Location": location})
            return await self._serve(request, repo, sha, path)

        return handler

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        repo = self.repos.get((request.match_info["kind"], f"{request.match_info['org']}/{request.match_info['name']}"))
        path = request.match_info["path"]
        if repo is None or path not in repo.files:
            return web.Response(status=404)
        return await self._serve(request, repo, request.match_info["rev"], path)

    def _file_headers(self, repo: HubRepo, sha: str, path: str) -> dict[str, str]:
        entry = repo.entry(path)
        etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
        return {
            "X-Repo-Commit": sha,
            "ETag": f'"{etag}"',
            "X-Linked-Etag": f'"{etag}"',
            "X-Linked-Size": str(len(repo.files[path])),
            "Accept-Ranges": "bytes",
        }

    def _log(self, request: web.Request, path: str, rng: tuple[int, int] | None, status: int) -> None:
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        with self._lock:
            self.requests.append(
                Req(
                    request.method,
                    path,
                    request.match_info.get("rev", ""),
                    rng,
                    status,
                    time.monotonic(),
                    request.headers.get("Authorization"),
                    port,
                )
            )

    def _take(self, counter: str) -> bool:
        with self._lock:
            left = getattr(self.faults, counter)
            if left > 0:
                setattr(self.faults, counter, left - 1)
                return True
            return False

    async def _serve(self, request: web.Request, repo: HubRepo, sha: str, path: str) -> web.StreamResponse:
        data = repo.files[path]
        headers = self._file_headers(repo, sha, path)
        rng = None
        spec = request.headers.get("Range", "")
        if spec.startswith("bytes=") and not self.faults.ignore_range:
            first, _, last = spec[6:].partition("-")
            rng = (int(first), min(int(last) if last else len(data) - 1, len(data) - 1))
        if request.method == "HEAD":
            self._log(request, path, rng, 200)
            return web.Response(status=200, headers={**headers, "Content-Length": str(len(data))})
        if self._take("throttle_count"):
            status = self.faults.throttle_status
            self._log(request, path, rng, status)
            return web.Response(status=status, headers={"Retry-After": str(self.faults.throttle_retry_after)})
        body = data if rng is None else data[rng[0] : rng[1] + 1]
        if self._should_corrupt(path) and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        status = 200 if rng is None else 206
        if rng is not None:
            headers["Content-Range"] = f"bytes {rng[0]}-{rng[1]}/{len(data)}"
        self._log(request, path, rng, status)
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        drop = len(body) > self.faults.drop_after and self._take("drop_count")
        limit = self.faults.drop_after if drop else len(body)
        sent = 0
        while sent < min(limit, len(body)):
            piece = body[sent : min(sent + (self.faults.trickle or CHUNK), limit)]
            await resp.write(piece)
            sent += len(piece)
            if self.faults.slow_delay:
                await asyncio.sleep(self.faults.slow_delay)
        if drop:
            assert request.transport is not None
            request.transport.abort()  # the connection dies mid-body
            return resp
        await resp.write_eof()
        return resp

    def _should_corrupt(self, path: str) -> bool:
        f = self.faults
        if f.corrupt is None or (f.corrupt_path is not None and f.corrupt_path != path):
            return False
        with self._lock:
            if f.corrupt == "once":
                if path in self._corrupted:
                    return False
                self._corrupted.add(path)
            return True
