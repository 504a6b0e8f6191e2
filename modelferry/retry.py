"""Retries with exponential backoff and full jitter, honouring Retry-After."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

from modelferry.errors import RetryableError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Cancelled(RetryableError):
    """The run is shutting down (SIGTERM, or another file failed for good)."""

    reason = "Cancelled"


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Delay before attempt ``attempt`` (1-based): full jitter, but never sooner than Retry-After."""
    delay = random.uniform(0, min(cap, base * (2 ** (attempt - 1))))  # noqa: S311 - jitter, not crypto
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap * 4))
    return delay


def retry_call(
    fn: Callable[[], T],
    *,
    retries: int,
    base: float,
    cap: float,
    what: str,
    cancel: threading.Event | None = None,
    on_retry: Callable[[RetryableError, int], None] | None = None,
) -> T:
    """Call ``fn``; on :class:`RetryableError` wait and try again, up to ``retries`` more times."""
    attempt = 0
    while True:
        try:
            return fn()
        except Cancelled:
            raise
        except RetryableError as exc:
            attempt += 1
            if attempt > retries:
                raise
            delay = backoff_delay(attempt, base, cap, exc.retry_after)
            log.warning("retrying %s in %.1fs (attempt %d of %d): %s", what, delay, attempt, retries, exc)
            if on_retry:
                on_retry(exc, attempt)
            if cancel is not None:
                if cancel.wait(delay):
                    raise Cancelled("cancelled while waiting to retry", obj=what) from exc
            else:
                threading.Event().wait(delay)
