"""Deciding ``check`` items: hash what is already there and compare."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

from modelferry.retry import Cancelled
from modelferry.storage.base import Store
from modelferry.transfer.plan import Action, Plan, PlanItem
from modelferry.transfer.verify import Expectation, check


def hash_item(store: Store, item: PlanItem, cancel: threading.Event) -> PlanItem:
    """Hash the target copy (or, for ``check_source`` items, the local source) of one file."""
    info = item.source
    sha = hashlib.sha256()
    md5 = hashlib.md5() if item.expected.md5 else None  # noqa: S324 - protocol checksum
    sha1 = hashlib.sha1(f"blob {info.size}\0".encode()) if item.expected.git_sha1 else None  # noqa: S324
    for chunk in store.read(info.path, 0, info.size):
        if cancel.is_set():
            raise Cancelled("cancelled", obj=info.path)
        sha.update(chunk)
        if md5:
            md5.update(chunk)
        if sha1:
            sha1.update(chunk)
    mismatch = check(
        item.expected,
        size=info.size,
        got_size=info.size,
        sha256=sha.hexdigest(),
        md5=md5.hexdigest() if md5 else None,
        git_sha1=sha1.hexdigest() if sha1 else None,
        part_md5s=None,
    )
    if mismatch is None:
        return PlanItem(info, Action.SKIP, "verified at target", item.expected, known_sha256=sha.hexdigest())
    # Copy against what the source itself promises (a check_source item carried the old record).
    return PlanItem(info, Action.COPY, f"content differs: {mismatch}", Expectation.for_object(info))


def resolve_checks(plan: Plan, source: Store, target: Store, *, workers: int, cancel: threading.Event) -> Plan:
    """Turn every CHECK into SKIP or COPY by hashing, several files at once (a batch of the plan at a time)."""
    if not plan.count(Action.CHECK):
        return plan

    def one(item: PlanItem) -> PlanItem:
        return hash_item(source if item.check_source else target, item, cancel)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, 8)), thread_name_prefix="check") as pool:
        checks = plan.of(Action.CHECK)
        while batch := list(islice(checks, 256)):
            plan.replace(list(pool.map(one, batch)))
    return plan
