"""Retries: exponential backoff with full jitter, Retry-After as a floor, cancellation while waiting."""

from __future__ import annotations

import random
import threading

import pytest

from modelferry import retry
from modelferry.errors import NotFoundError, RetryableError, ThrottledError
from modelferry.retry import Cancelled, backoff_delay, retry_call


def test_backoff_grows_exponentially_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", lambda lo, hi: hi)  # the top of the jitter window
    assert [backoff_delay(n, 0.5, 10.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_backoff_is_fully_jittered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", lambda lo, hi: lo)
    assert backoff_delay(4, 0.5, 10.0) == 0.0  # full jitter: the window starts at zero


def test_jitter_stays_in_its_window() -> None:
    delays = [backoff_delay(3, 1.0, 10.0) for _ in range(200)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 1  # jittered, not a fixed step


def test_retry_after_is_a_floor_but_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", lambda lo, hi: lo)
    assert backoff_delay(1, 0.5, 10.0, retry_after=7.0) == 7.0
    assert backoff_delay(1, 0.5, 10.0, retry_after=3600.0) == 40.0  # a hostile Retry-After cannot park us for hours


class Flaky:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_retryable_errors_are_retried_then_succeed(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    def no_wait(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
        waits.append(retry_after or 0.0)
        return 0.0

    monkeypatch.setattr(retry, "backoff_delay", no_wait)
    seen: list[int] = []
    fn = Flaky([RetryableError("reset"), ThrottledError("429", retry_after=2.0)])
    assert retry_call(fn, retries=3, base=0.01, cap=0.01, what="x", on_retry=lambda _e, n: seen.append(n)) == "ok"
    assert fn.calls == 3 and seen == [1, 2]
    assert waits == [0.0, 2.0]  # the server's Retry-After reached the backoff


def test_gives_up_after_the_retry_budget() -> None:
    fn = Flaky([RetryableError(f"fail {n}") for n in range(5)])
    with pytest.raises(RetryableError, match="fail 2"):
        retry_call(fn, retries=2, base=0.0, cap=0.0, what="x")
    assert fn.calls == 3


def test_permanent_errors_are_not_retried() -> None:
    fn = Flaky([NotFoundError("gone")])
    with pytest.raises(NotFoundError):
        retry_call(fn, retries=5, base=0.0, cap=0.0, what="x")
    assert fn.calls == 1


def test_cancelled_is_never_retried() -> None:
    fn = Flaky([Cancelled("stop")])
    with pytest.raises(Cancelled):
        retry_call(fn, retries=5, base=0.0, cap=0.0, what="x")
    assert fn.calls == 1


def test_cancel_interrupts_the_backoff_wait() -> None:
    cancel = threading.Event()
    cancel.set()  # SIGTERM arrived: a long backoff must not delay shutdown
    fn = Flaky([ThrottledError("503", retry_after=30.0)])
    with pytest.raises(Cancelled, match="waiting to retry"):
        retry_call(fn, retries=5, base=10.0, cap=10.0, what="x", cancel=cancel)
    assert fn.calls == 1
