"""The aiohttp application: OpenAI-compatible routes, health and metrics, a bounded request queue.

Generation runs in one worker thread; at most ``max_queue`` requests wait for it, more are answered
503 with ``Retry-After`` (a load balancer or client retries elsewhere). Streaming answers are
server-sent events (``data: {...}`` ... ``data: [DONE]``); a client that goes away cancels its
generation at the next token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from modelferry.logs import scrub
from modelferry.serve import requests as oai
from modelferry.serve.metrics import ServeMetrics
from modelferry.serve.model import Completion, LoadedModel, RequestError, chat_prompt

log = logging.getLogger(__name__)

_DONE = object()


class Busy(Exception):
    """The queue is full."""


class ServeApp:
    """Routes over one :class:`LoadedModel`."""

    def __init__(
        self, model: LoadedModel, *, max_queue: int = 16, max_tokens: int = 4096, metrics: ServeMetrics | None = None
    ) -> None:
        self.model = model
        self.max_queue = max_queue
        self.max_tokens = max_tokens
        self.metrics = metrics or ServeMetrics()
        self.created = int(time.time())
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._slot: asyncio.Semaphore | None = None
        self._waiting = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _app: web.Application) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "models": self.model.names})

    async def prometheus(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})

    async def models(self, _request: web.Request) -> web.Response:
        data = [{"id": self.model.name, "object": "model", "created": self.created, "owned_by": "modelferry"}]
        if self.model.adapter_name:
            data.append(
                {
                    "id": self.model.adapter_name,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "modelferry",
                    "parent": self.model.name,
                }
            )
        return web.json_response({"object": "list", "data": data})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        endpoint = "chat" if chat else "completions"
        started = time.monotonic()
        model, status = "", 500
        try:
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise RequestError("the request body is not valid JSON") from None
            parsed = oai.parse(body, chat=chat, names=self.model.names, max_tokens_limit=self.max_tokens)
            model = parsed.model
            prompt = parsed.prompt
            if prompt is None:
                prompt = chat_prompt(self.model.tokenizer, parsed.messages or [])
            if parsed.stream:
                response, status = await self._stream(request, parsed, prompt, chat, started)
                return response
            done = await self._run(parsed.model, prompt, parsed, None, None)
            self._count(model, done, endpoint, started, time.monotonic())
            status = 200
            return web.json_response(oai.response(oai.new_id(chat), model, chat, done))
        except RequestError as exc:
            status = 400
            return web.json_response(oai.error_body(scrub(str(exc))), status=400)
        except (ConnectionResetError, asyncio.CancelledError):
            status = 499  # the client went away (nginx's code for it)
            raise
        except Busy:
            status = 503
            self.metrics.rejected.inc()
            body = oai.error_body("the server is busy; retry shortly", "server_busy", "busy")
            return web.json_response(body, status=503, headers={"Retry-After": "1"})
        finally:
            self.metrics.requests.labels(endpoint, model or "-", str(status)).inc()
            self.metrics.request_duration.labels(endpoint).observe(time.monotonic() - started)

    def _count(self, model: str, done: Completion, endpoint: str, started: float, first: float | None) -> None:
        """Tokens, and the time to the first text (the whole answer when it was not streamed)."""
        self.metrics.prompt_tokens.labels(model).inc(done.prompt_tokens)
        self.metrics.completion_tokens.labels(model).inc(done.completion_tokens)
        if first is not None and done.completion_tokens:
            self.metrics.first_token.labels(endpoint).observe(first - started)

    async def _run(
        self,
        name: str,
        prompt: str,
        parsed: oai.Parsed,
        on_text: Any,
        cancel: threading.Event | None,
    ) -> Completion:
        """Wait for the model (bounded), then generate in the worker thread."""
        if self._slot is None:
            self._slot = asyncio.Semaphore(1)
        if self._slot.locked() and self._waiting >= self.max_queue:
            raise Busy
        self._waiting += 1
        self.metrics.waiting.set(self._waiting)
        queued = time.monotonic()
        try:
            await self._slot.acquire()
        finally:
            self._waiting -= 1
            self.metrics.waiting.set(self._waiting)
        self.metrics.queue_wait.observe(time.monotonic() - queued)
        self.metrics.running.inc()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor,
                lambda: self.model.generate(name, prompt, parsed.params, on_text=on_text, cancel=cancel),
            )
        finally:
            self.metrics.running.dec()
            self._slot.release()

    async def _stream(
        self, request: web.Request, parsed: oai.Parsed, prompt: str, chat: bool, started: float
    ) -> tuple[web.StreamResponse, int]:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()
        rid, model, endpoint = oai.new_id(chat), parsed.model, "chat" if chat else "completions"

        def on_text(text: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, text)

        task = asyncio.ensure_future(self._run(model, prompt, parsed, on_text, cancel))
        task.add_done_callback(lambda _t: pieces.put_nowait(_DONE))
        # Busy and bad requests are answered with a status before any event is sent.
        first_item = await pieces.get()
        if first_item is _DONE and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        first_at: float | None = None
        item, first = first_item, True
        try:
            while item is not _DONE:
                first_at = first_at or time.monotonic()
                await self._event(response, oai.chunk(rid, model, chat, str(item), None, first=first))
                first, item = False, await pieces.get()
            try:
                done = task.result()
            except RequestError as exc:
                await self._event(response, oai.error_body(scrub(str(exc))))
                await response.write(b"data: [DONE]\n\n")
                return response, 400
            self._count(model, done, endpoint, started, first_at)
            await self._event(response, oai.chunk(rid, model, chat, None, done.finish_reason, first=first))
            if parsed.include_usage:
                final = oai.chunk(rid, model, chat, None, None)
                final.update(choices=[], usage=oai.usage(done))
                await self._event(response, final)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response, 200
        except (ConnectionResetError, asyncio.CancelledError):
            cancel.set()  # the client went away: stop generating at the next token
            log.info("a streaming client disconnected; generation cancelled")
            raise

    @staticmethod
    async def _event(response: web.StreamResponse, body: dict[str, Any]) -> None:
        await response.write(b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n")
