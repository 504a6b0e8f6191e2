"""Pure: a ModelSync's ``spec.transfer`` as the sync's ``MODELFERRY_TRANSFER__*`` variables.

Values are checked against the engine's own bounds (:class:`TransferSettings`) here, so a bad value
gives the ModelSync ``Ready=False`` instead of a Job that fails with a usage error (exit 2).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from modelferry.controller.api.v1alpha1.modelsync import Transfer
from modelferry.controller.sync.secretmode import Finding
from modelferry.settings import TransferSettings
from modelferry.units import parse_size


def transfer_env_for(transfer: Transfer) -> tuple[list[dict[str, Any]], Finding | None]:
    """The env for ``spec.transfer``, or the finding that refuses it."""
    values: dict[str, int | None] = {}
    try:
        if transfer.concurrency is not None:
            values["concurrency"] = transfer.concurrency
        if transfer.part_size is not None:
            values["part_size"] = parse_size(str(transfer.part_size))
        if transfer.size_limit is not None:
            values["size_limit"] = parse_size(str(transfer.size_limit))
    except Exception:
        return [], Finding("InvalidTransfer", "spec.transfer.partSize/sizeLimit must be sizes such as 64MiB or 650GB")
    try:  # the engine's own bounds: refused here (Ready=False), never by a Job that fails with exit 2
        TransferSettings(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return [], Finding("InvalidTransfer", f"spec.transfer is outside the engine's limits ({problems}); fix it")
    env = [{"name": f"MODELFERRY_TRANSFER__{key.upper()}", "value": str(value)} for key, value in values.items()]
    return env, None
