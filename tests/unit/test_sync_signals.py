"""SIGTERM/SIGINT during a sync set the engine's cancel event instead of killing the process."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from modelferry.cli.dataplane import cancel_on_signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_sets_the_cancel_event_and_handlers_are_restored(signum: int) -> None:
    before = signal.getsignal(signum)
    with cancel_on_signals() as cancel:
        assert not cancel.is_set()
        os.kill(os.getpid(), signum)
        assert cancel.wait(5), "the signal did not reach the handler"
    assert signal.getsignal(signum) is before


def test_off_the_main_thread_no_handler_is_installed() -> None:
    seen: list[bool] = []
    before = signal.getsignal(signal.SIGTERM)

    def body() -> None:
        with cancel_on_signals() as cancel:
            seen.append(cancel.is_set())
            seen.append(signal.getsignal(signal.SIGTERM) is before)

    worker = threading.Thread(target=body)
    worker.start()
    worker.join(timeout=5)
    assert seen == [False, True]
