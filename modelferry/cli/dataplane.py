"""What every data-plane command shares: settings overrides, signals, output."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from modelferry.backends.registry import credential_blocks
from modelferry.errors import UsageError
from modelferry.logs import register_secret, scrub_record
from modelferry.settings import Credentials, SyncSettings, masked, warn_unknown_env
from modelferry.transfer.progress import Progress

log = logging.getLogger("modelferry")

TERMINATION_MESSAGE_LIMIT = 4096


def _set(model: BaseModel, dotted: str, value: Any) -> BaseModel:
    head, _, rest = dotted.partition(".")
    if not rest:
        return model.model_copy(update={head: value})
    child = getattr(model, head)
    return model.model_copy(update={head: _set(child, rest, value)})


def _in_units(field: str, value: Any) -> str:
    """A bound or an input as the user writes it: sizes in binary units, everything else as is."""
    if (field.endswith("_size") or field.endswith("size_limit")) and isinstance(value, int) and value >= 1024:
        for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value % factor == 0:
                return f"{value // factor}{unit}"
    return str(value)


def describe_invalid(exc: ValidationError, flags: Mapping[str, str]) -> str:
    """One line per problem: the option and variable that set it, what is allowed, what was given."""
    problems = []
    for error in exc.errors():
        dotted = ".".join(str(part) for part in error["loc"])
        field = str(error["loc"][-1]) if error["loc"] else ""
        env = "MODELFERRY_" + dotted.upper().replace(".", "__")
        where = f"{flags[dotted]} ({env})" if dotted in flags else env
        bounds = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
        ctx = error.get("ctx") or {}
        limit = next(((word, ctx[key]) for key, word in bounds.items() if key in ctx), None)
        what = f"must be {limit[0]} {_in_units(field, limit[1])}" if limit else str(error["msg"]).lower()
        problems.append(f"{where} {what}, got {_in_units(field, error.get('input'))}")
    return "; ".join(problems)


def build_settings(overrides: Mapping[str, Any], flags: Mapping[str, str] | None = None) -> SyncSettings:
    """Environment first, then command-line values (those not None) on top; validated once.

    ``flags`` names the command-line option of each dotted setting, for the error message.
    """
    try:
        settings = SyncSettings()
        for dotted, value in overrides.items():
            if value is not None:
                settings = _set(settings, dotted, value)  # type: ignore[assignment]
        settings = SyncSettings.model_validate(settings.model_dump())
    except ValidationError as exc:
        raise UsageError(
            f"invalid settings: {describe_invalid(exc, flags or {})}",
            hint="Fix the command-line option or the MODELFERRY_* variable named here",
        ) from exc
    warn_unknown_env(SyncSettings)
    for side in (settings.source, settings.target):
        register_credentials(side)
    log.debug("effective settings: %s", json.dumps(masked(settings)))
    return settings


def register_credentials(creds: Credentials) -> None:
    """Tell the log scrubber every secret value we hold: each backend's secret fields and variables."""
    for block in credential_blocks():
        values = getattr(creds, block.block, None)
        for value in vars(values).values() if values is not None else ():
            if isinstance(value, SecretStr):
                register_secret(value.get_secret_value())
    for name in (*(n for block in credential_blocks() for n in block.secret_env), "MLFLOW_TRACKING_TOKEN"):
        register_secret(os.environ.get(name))


@contextlib.contextmanager
def cancel_on_signals() -> Iterator[threading.Event]:
    """SIGTERM/SIGINT set an event the engine checks between chunks (drain, keep partials)."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.warning(
            "received signal %d: stopping after the current chunks; partial files are kept for resume",
            signum,
        )
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield event
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def progress_for(json_output: bool, interval: float, quiet: bool = False) -> Progress:
    if quiet:
        return Progress(mode="none")
    if sys.stderr.isatty() and not json_output:
        return Progress(mode="rich")
    # Off a terminal, also print MODELFERRY_PROGRESS lines: the controller tails the pod log for them.
    return Progress(mode="log", interval=interval, machine_lines=True)


def write_termination_message(path: str, payload: dict[str, Any]) -> None:
    """Kubernetes shows this file's content in the pod status; the controller reads it for progress."""
    payload = scrub_record(payload)  # the pod status is readable by anyone who can read the pod
    text = json.dumps(payload, separators=(",", ":"))
    if len(text) > TERMINATION_MESSAGE_LIMIT:
        slim = {k: v for k, v in payload.items() if k not in ("plan", "refetched")}
        text = json.dumps(slim, separators=(",", ":"))[:TERMINATION_MESSAGE_LIMIT]
    # /dev/termination-log exists in every pod; elsewhere only an explicitly chosen path is written.
    exists = os.path.exists(path)
    if not exists and path == "/dev/termination-log":
        return
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except OSError:
        log.debug("termination message %s not writable", path)
