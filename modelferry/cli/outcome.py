"""How a sync-like command reports its outcome: the termination message and the ``--json`` summary.

Shared by ``modelferry sync`` and the OME-Agent compatible commands so both
write the same failure record and summary in the same places.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

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


def report_plan(
    termination_log: str, summary: dict[str, Any], items: Iterable[dict[str, Any]], *, json_output: bool
) -> None:
    """A dry run's summary; with ``json_output`` its ``plan.items`` streamed onto stdout one by one.

    The termination message gets the summary without the items (it has room for 4 KiB). On stdout the
    document is the same as :func:`report_summary` would print with every item in place, but the items
    are never all in memory: a million-file plan is printed in constant memory.
    """
    write_termination_message(termination_log, summary)
    if json_output:
        write_with_items(sys.stdout, scrub_record(summary), (scrub_record(item) for item in items))


_EMPTY_ITEMS = '"items": []'


def write_with_items(out: TextIO, summary: dict[str, Any], items: Iterable[dict[str, Any]]) -> None:
    """``summary`` as indented JSON, its ``plan.items`` (empty in ``summary``) written from ``items``."""
    plan = dict(summary["plan"], items=[])
    text = json.dumps({**summary, "plan": plan}, indent=1)
    # Inside a JSON string a quote is escaped, so this text can only be the key and its empty list.
    head, found, tail = text.rpartition(_EMPTY_ITEMS)
    assert found, "the items key is set just above"
    out.write(head + '"items": [')
    for n, item in enumerate(items):
        out.write(("\n   " if n == 0 else ",\n   ") + json.dumps(item))
    out.write("\n  ]" + tail + "\n")
