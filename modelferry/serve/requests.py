"""OpenAI request bodies -> validated generation inputs, and the response bodies (pure functions)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from modelferry.serve.model import Completion, GenerationParams, RequestError

MAX_STOPS = 4
MAX_STOP_CHARS = 256
ROLES = {"system", "user", "assistant", "developer", "tool"}


@dataclass(frozen=True)
class Parsed:
    """One request: the served model it names, its prompt or messages, parameters and stream options."""

    model: str
    prompt: str | None
    messages: list[dict[str, str]] | None
    params: GenerationParams
    stream: bool
    include_usage: bool


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RequestError(f"'{key}' must be a number from {low} to {high}")
    return float(value)


def _max_tokens(body: dict[str, Any], chat: bool, limit: int) -> int | None:
    keys = ("max_completion_tokens", "max_tokens") if chat else ("max_tokens",)
    value = next((body[k] for k in keys if body.get(k) is not None), None)
    if value is None:
        return None if chat else 16  # OpenAI's defaults: the rest of the context for chat, 16 for completions
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise RequestError(f"'max_tokens' must be an integer from 1 to {limit}")
    return value


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOPS
        or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops)
    ):
        raise RequestError(f"'stop' must be a string or a list of up to {MAX_STOPS} non-empty strings")
    return tuple(stops)


def _content(value: Any, index: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: only text is understood
        parts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(f"messages[{index}].content: only text parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise RequestError(f"messages[{index}].content must be a string or a list of text parts")


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RequestError("'messages' must be a non-empty list")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            raise RequestError(f"messages[{i}] needs a 'role' out of {', '.join(sorted(ROLES))}")
        out.append({"role": str(msg["role"]), "content": _content(msg.get("content"), i)})
    return out


def _prompt(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str):
        raise RequestError("'prompt' must be a string (or a list holding one string)")
    return value


def parse(body: Any, *, chat: bool, names: list[str], max_tokens_limit: int) -> Parsed:
    """Validate a request body; a :class:`RequestError` says what is wrong with it."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = body.get("model") or names[0]
    if model not in names:
        raise RequestError(f"model {str(model)[:100]!r} is not served here (served: {', '.join(names)})")
    if body.get("n", 1) != 1:
        raise RequestError("only 'n': 1 is supported")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise RequestError("'seed' must be a non-negative integer")
    params = GenerationParams(
        max_tokens=_max_tokens(body, chat, max_tokens_limit),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0) or 1.0,
        stop=_stops(body.get("stop")),
        seed=seed,
    )
    options = body.get("stream_options") or {}
    return Parsed(
        model=str(model),
        prompt=None if chat else _prompt(body.get("prompt")),
        messages=_messages(body.get("messages")) if chat else None,
        params=params,
        stream=bool(body.get("stream", False)),
        include_usage=isinstance(options, dict) and bool(options.get("include_usage", False)),
    )


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex


def usage(done: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def response(rid: str, model: str, chat: bool, done: Completion) -> dict[str, Any]:
    """The non-streaming answer."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": done.finish_reason}
    if chat:
        choice["message"] = {"role": "assistant", "content": done.text}
    else:
        choice.update(text=done.text, logprobs=None)
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage(done),
    }


def chunk(
    rid: str, model: str, chat: bool, text: str | None, finish: str | None, first: bool = False
) -> dict[str, Any]:
    """One server-sent event of a streaming answer."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if chat:
        delta: dict[str, str] = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice.update(text=text or "", logprobs=None)
    return {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
