"""Run and watch the trainer: as a child process (local) or in another container (pod protocol).

Pod protocol, in ``WORKSPACE/.modelferry/`` (the controller's POSIX-sh wrapper is the other side):
``env`` (shell ``export`` lines the wrapper sources), ``go`` (the sidecar releases the trainer),
``abort`` (staging failed: the wrapper exits without running the trainer), ``stop`` (the sidecar
asks for SIGTERM), ``trainer.log`` (the trainer's output), ``exit-code`` (written by the wrapper, last,
atomically). The sidecar learns about ``exit-code`` through watchfiles (inotify).
"""

from __future__ import annotations

import logging
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol

log = logging.getLogger("modelferry.sidecar")

CONTROL_DIR = ".modelferry"
ENV_FILE = "env"
GO_FILE = "go"
ABORT_FILE = "abort"
STOP_FILE = "stop"
LOG_FILE = "trainer.log"
EXIT_FILE = "exit-code"
COMMAND_FILE = "command.sh"
PROTOCOL_FILES = (ENV_FILE, GO_FILE, ABORT_FILE, STOP_FILE, LOG_FILE, EXIT_FILE, COMMAND_FILE)


def exit_status(returncode: int) -> int:
    """Shell convention: killed by signal N -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class Trainer(Protocol):
    """What the runner needs from a running trainer."""

    def start(self, env: Mapping[str, str]) -> None: ...
    def poll(self) -> int | None: ...
    def lines(self) -> list[str]: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def wait_event(self, timeout: float) -> None: ...


class LocalTrainer:
    """The trainer as our child: output passed through to ``echo`` and kept in ``log_path``."""

    def __init__(self, argv: Sequence[str], log_path: Path, *, cwd: Path | None = None, echo: IO[str] | None = None):
        if not argv:
            raise ValueError("no trainer command")
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.echo = echo if echo is not None else sys.stdout
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._event = threading.Event()

    def start(self, env: Mapping[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        log.info("starting trainer: %s", shlex.join(self.argv))
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=self.cwd,
            )
        except OSError as exc:
            from modelferry.errors import UsageError

            raise UsageError(
                f"cannot start the trainer {self.argv[0]!r}: {exc.strerror}", hint="Check the command after --"
            ) from exc
        self._reader = threading.Thread(target=self._pump, name="trainer-output", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with self.log_path.open("ab") as keep:
            for raw in iter(self._proc.stdout.readline, b""):
                keep.write(raw)
                keep.flush()
                text = raw.decode("utf-8", "replace")
                try:
                    self.echo.write(text)
                    self.echo.flush()
                except (OSError, ValueError):
                    pass  # our stdout closed: keep the log file going
                self._lines.put(text.rstrip("\n"))
                self._event.set()
        self._event.set()

    def poll(self) -> int | None:
        assert self._proc is not None
        code = self._proc.poll()
        if code is None:
            return None
        if self._reader is not None:
            self._reader.join(timeout=5)  # the last lines belong to this run
        return exit_status(code)

    def lines(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self._lines.get_nowait())
            except queue.Empty:
                return out

    def signal(self, signum: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signum)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def wait_event(self, timeout: float) -> None:
        self._event.wait(timeout)
        self._event.clear()


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class PodTrainer:
    """The trainer in another container, driven through files in the shared workspace."""

    def __init__(self, workspace: Path) -> None:
        self.control = workspace / CONTROL_DIR
        self.control.mkdir(parents=True, exist_ok=True)
        self._offset = 0
        self._partial = b""
        self._stop_watch = threading.Event()
        self._event = threading.Event()
        self._watcher: threading.Thread | None = None

    def set_command(self, argv: Sequence[str]) -> None:
        """The command the wrapper runs when the controller gave it none (built-in runtimes)."""
        write_atomic(self.control / COMMAND_FILE, "exec " + shlex.join(argv) + "\n")

    def start(self, env: Mapping[str, str]) -> None:
        lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items() if k.isidentifier()]
        write_atomic(self.control / ENV_FILE, "\n".join(lines) + "\n")
        write_atomic(self.control / GO_FILE, f"{time.time():.3f}\n")
        log.info("released the trainer container (%s)", self.control / GO_FILE)
        self._watcher = threading.Thread(target=self._watch, name="workspace-watch", daemon=True)
        self._watcher.start()

    def abort(self, code: int) -> None:
        """Staging failed: tell the wrapper not to run the trainer."""
        write_atomic(self.control / ABORT_FILE, f"{code}\n")

    def _watch(self) -> None:
        from watchfiles import watch

        for _changes in watch(
            self.control,
            stop_event=self._stop_watch,
            debounce=50,
            yield_on_timeout=True,
            rust_timeout=1000,
            raise_interrupt=False,
        ):
            self._event.set()

    def poll(self) -> int | None:
        path = self.control / EXIT_FILE
        if not path.exists():
            return None
        text = path.read_text(encoding="utf-8").strip()
        self._stop_watch.set()
        try:
            return int(text)
        except ValueError:
            log.warning("unreadable exit status %r in %s", text, path)
            return 1

    def lines(self) -> list[str]:
        path = self.control / LOG_FILE
        try:
            with path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        parts = (self._partial + data).split(b"\n")
        self._partial = parts.pop()
        out = [p.decode("utf-8", "replace") for p in parts]
        for line in out:  # the trainer container's output reaches `kubectl logs` through us
            sys.stdout.write(f"[trainer] {line}\n")
        sys.stdout.flush()
        return out

    def terminate(self) -> None:
        write_atomic(self.control / STOP_FILE, "TERM\n")

    def kill(self) -> None:
        write_atomic(self.control / STOP_FILE, "KILL\n")

    def wait_event(self, timeout: float) -> None:
        self._event.wait(timeout)
        self._event.clear()
