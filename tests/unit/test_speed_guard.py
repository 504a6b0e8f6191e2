"""The low-speed guard's decisions, on a clock the test moves (no waiting)."""

from __future__ import annotations

import pytest

from modelferry.errors import TooSlowError
from modelferry.speed import LowSpeedGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_many_slow_connections_on_an_honest_link_do_not_trip() -> None:
    """64 connections at 1 KiB/s each move 64 KiB/s together: above a 10 KiB/s limit."""
    clock = Clock()
    guard = LowSpeedGuard(10 * 1024, 60.0, clock)
    started = clock()
    for _ in range(120):  # two minutes, one second at a time
        clock.now += 1.0
        for _ in range(64):
            guard.add(1024)
            guard.check(started, "part")


def test_a_lone_trickle_trips_after_speed_time_not_before() -> None:
    clock = Clock()
    guard = LowSpeedGuard(10 * 1024, 60.0, clock)
    started = clock()
    for _ in range(59):
        clock.now += 1.0
        guard.add(100)
        guard.check(started, "part")  # younger than speed_time: never judged
    clock.now += 1.5
    guard.add(100)
    with pytest.raises(TooSlowError, match="under the low-speed limit of 10240 bytes/s"):
        guard.check(started, "hf://org/model/model.safetensors")


def test_a_retried_part_gets_a_fresh_window_and_zero_switches_it_off() -> None:
    clock = Clock()
    guard = LowSpeedGuard(10 * 1024, 60.0, clock)
    clock.now += 120
    guard.add(1)
    guard.check(clock(), "retry")  # just started: not judged on the failed attempt's window
    LowSpeedGuard(0, 60.0, clock).check(0.0, "off")
