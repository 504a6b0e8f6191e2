"""Logging: stdlib logging in text or JSON, with secrets scrubbed from every record.

Messages are constant strings with ``%s`` arguments. Secret values that the
process learns at runtime (keys, tokens, passcodes) are registered with
:func:`register_secret`; the filter replaces them, plus well-known token
shapes, with ``***`` in the rendered message and in exception text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from modelferry.backends.registry import sdk_loggers

_secrets: set[str] = set()
# Values registered for one scope (a namespace, in the controller): masked only in text about that scope,
# so one tenant's Secret values never mask words in another tenant's status or Events.
_scoped: dict[str, dict[str, frozenset[str]]] = {}
_lock = threading.Lock()

# Shapes that are secrets whoever logs them.
_PATTERNS = [
    re.compile(r"hf_[A-Za-z0-9]{20,}"),
    re.compile(r"(?i)(authorization:\s*)(bearer\s+)?\S+"),
    re.compile(
        r"(?i)(x-amz-security-token|aws_secret_access_key|secret_key|api_key|passcode|token)(\"?\s*[:=]\s*\"?)[^\s\",}]+"
    ),
]


def register_secret(value: str | None) -> None:
    """Never log ``value``. Short values are ignored to avoid scrubbing common words."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def register_scoped_secrets(scope: str, source: str, values: set[str]) -> None:
    """The secret ``values`` of ``source`` (e.g. a Secret's name) in ``scope``; replaces what it held before."""
    kept = frozenset(v for v in values if v and len(v) >= 6)
    with _lock:
        sources = _scoped.setdefault(scope, {})
        if kept:
            sources[source] = kept
        else:
            sources.pop(source, None)


def scrub(text: str, scope: str | None = None) -> str:
    """Replace registered secrets (plus those of ``scope``) and known secret shapes in ``text``."""
    with _lock:
        found = set(_secrets)
        for scoped in (_scoped.get(scope) or {}).values() if scope is not None else ():
            found |= scoped
        values = sorted(found, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, "***")
    for pattern in _PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2) or ''}***", text)
        else:
            text = pattern.sub("***", text)
    return text


def scrub_record(value: Any, scope: str | None = None) -> Any:
    """:func:`scrub` every string in a JSON-like record (summaries, failure records, termination messages)."""
    if isinstance(value, str):
        return scrub(value, scope)
    if isinstance(value, dict):
        return {k: scrub_record(v, scope) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_record(v, scope) for v in value]
    return value


class SecretFilter(logging.Filter):
    """Renders the message once, scrubbed, so no handler can leak it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not kill logging
            message = str(record.msg)
        record.msg = scrub(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extra fields."""

    _skip = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._skip and not key.startswith("_"):
                payload[key] = value if isinstance(value, (int, float, bool, type(None))) else scrub(str(value))
        if record.exc_text:
            payload["exception"] = record.exc_text
        return json.dumps(payload, default=str)


def setup_logging(level: str = "info", fmt: str = "text", stream: Any = None) -> None:
    """Configure the root logger once for the process."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(SecretFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party chatter stays at WARNING unless we debug.
    noisy = [
        *sdk_loggers(),  # each storage backend's SDK (modelferry.backends)
        "urllib3",
        "httpx",
        "httpcore",
        "aiohttp.access",
        "werkzeug",
        "moto",
        "alembic",
    ]
    for name in noisy:
        logging.getLogger(name).setLevel("DEBUG" if level.lower() == "debug" and name != "oci" else "WARNING")
