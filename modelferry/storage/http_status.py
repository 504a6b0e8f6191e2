"""What an HTTP answer's status line and headers mean: ``Retry-After``, ``Content-Range``, whether a
redirect stays on the same origin, and the modelferry error for an unexpected status. Pure functions."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from modelferry.errors import AccessDeniedError, NotFoundError, PermanentError, RetryableError, ThrottledError

_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/total`` as (first, last, total); None when absent or malformed."""
    if not value:
        return None
    match = _CONTENT_RANGE_RE.match(value)
    if not match:
        return None
    total = None if match[3] == "*" else int(match[3])
    return int(match[1]), int(match[2]), total


def same_origin(a: str, b: str) -> bool:
    """True when two URLs share scheme, host and port (credentials may follow)."""
    pa, pb = urlsplit(a), urlsplit(b)
    default = {"http": 80, "https": 443}
    return (
        pa.scheme == pb.scheme
        and (pa.hostname or "").lower() == (pb.hostname or "").lower()
        and (pa.port or default.get(pa.scheme)) == (pb.port or default.get(pb.scheme))
    )


def status_error(status: int, what: str, headers: Mapping[str, str]) -> Exception:
    """The modelferry error for an unexpected HTTP status on ``what``."""
    if status in (429, 503):
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return ThrottledError(f"{what}: server answered {status} (slow down)", obj=what, retry_after=retry_after)
    if status >= 500:
        return RetryableError(f"{what}: server error {status}", obj=what)
    if status == 404:
        return NotFoundError(f"{what} does not exist (404)", obj=what)
    if status in (401, 403):
        return AccessDeniedError(
            f"{what}: access denied ({status})",
            obj=what,
            hint="Check the token or credentials and that they grant read access",
        )
    if status == 416:
        return PermanentError(
            f"{what}: requested range not satisfiable (416)",
            obj=what,
            hint="The object is smaller than listed: it changed during the copy; run again",
        )
    return PermanentError(f"{what}: unexpected HTTP status {status}", obj=what)
