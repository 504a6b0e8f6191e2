"""How a sync-like command reports its outcome: the termination message and the ``--json`` summary.

Shared by ``modelferry sync`` and the OME-Agent compatible commands so both
write the same failure record and summary in the same places.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from modelferry.cli.dataplane import write_termination_message
from modelferry.errors import ModelferryError
from modelferry.logs import scrub_record


def failure_record(exc: ModelferryError) -> dict[str, Any]:
    """The failure payload written to the termination log (and stdout with --json)."""
    return {"status": "failed", "reason": exc.reason, "message": str(exc), "exit_code": exc.exit_code}


def report_failure(termination_log: str, exc: ModelferryError, *, json_output: bool) -> None:
    """Record a failed run; with ``json_output`` print the record on stdout too, so scripts get an answer."""
    failure = failure_record(exc)
    write_termination_message(termination_log, failure)
    if json_output:
        sys.stdout.write(json.dumps(scrub_record(failure), indent=1) + "\n")


def report_summary(termination_log: str, summary: dict[str, Any], *, json_output: bool) -> None:
    """Record a finished run's summary; with ``json_output`` print it on stdout too."""
    write_termination_message(termination_log, summary)
    if json_output:
        sys.stdout.write(json.dumps(scrub_record(summary), indent=1) + "\n")
