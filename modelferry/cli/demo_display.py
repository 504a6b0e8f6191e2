"""What ``modelferry demo`` shows a person: one readable line per step, every training step's loss, a summary.

On a terminal the lines are styled by rich; elsewhere (a pipe, CI, a file) rich writes the same lines
plain. The libraries' own chatter (the trainer's JSON lines, MLflow's notices, transformers' warnings
and progress bars, our INFO logs) goes to ``demo.log`` in the work directory instead; warnings and
errors of our own still reach the screen, and a failure shows the log's last lines.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from modelferry.logs import SecretFilter

TAIL_LINES = 25


def human_bytes(count: int) -> str:
    """Bytes the way people read them (decimal units, like the transfer summaries)."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"  # unreachable: the loop returns at GB


class DemoDisplay:
    """The demo's screen: ``say`` for steps, ``training`` for metric reports, ``summary`` at the end."""

    def __init__(self, *, json_output: bool, stream: IO[str] | None = None) -> None:
        self.json_output = json_output
        self.console = Console(file=stream or sys.stderr, highlight=False, soft_wrap=True)
        self.number = 0

    def say(self, message: str) -> None:
        """One step of the demo, numbered."""
        if self.json_output:
            return
        self.number += 1
        self.console.print(f"[{self.number}] ", style="bold cyan", end="")
        self.console.print(message, markup=False)

    def training(self, records: list[Any]) -> None:
        """Each new metric report of the trainer: the step, of how many, and every value it carries."""
        if self.json_output:
            return
        for record in records:
            total = f"/{record.total_steps}" if record.total_steps else ""
            values = "  ".join(f"{name} {value:.4f}" for name, value in sorted(record.values.items()))
            self.console.print(f"    step {record.step}{total}  ", style="dim", end="")
            self.console.print(values, markup=False)

    @contextlib.contextmanager
    def quiet(self, workdir: Path) -> Iterator[Path]:
        """Send library output and INFO logs to ``workdir/demo.log`` while the demo runs (warnings still show)."""
        log_path = workdir / "demo.log"
        root = logging.getLogger()
        verbose = root.getEffectiveLevel() <= logging.DEBUG  # --log-level debug: the user wants it all on screen
        screens = {handler: handler.level for handler in root.handlers}
        with log_path.open("a", encoding="utf-8", errors="replace") as log_file:
            to_file = logging.StreamHandler(log_file)
            to_file.addFilter(SecretFilter())
            to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
            root.addHandler(to_file)
            if not verbose:
                for handler in screens:
                    handler.setLevel(max(handler.level, logging.WARNING))
            try:
                with contextlib.redirect_stdout(log_file), contextlib.redirect_stderr(log_file):
                    yield log_path
            except BaseException:
                log_file.flush()
                self.tail(log_path)
                raise
            finally:
                root.removeHandler(to_file)
                for handler, level in screens.items():
                    handler.setLevel(level)

    def tail(self, log_path: Path) -> None:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-TAIL_LINES:]
        if lines:
            self.console.print(f"last lines of {log_path}:", style="bold red")
            for line in lines:
                self.console.print("  " + line, markup=False)
