"""Sizes as people write them: ``650GB``, ``15MiB``, ``0`` or plain bytes."""

from __future__ import annotations

_FACTORS = {  # longest suffixes first: "MIB" before "B"
    "KIB": 1 << 10,
    "MIB": 1 << 20,
    "GIB": 1 << 30,
    "TIB": 1 << 40,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "K": 1 << 10,
    "M": 1 << 20,
    "G": 1 << 30,
    "T": 1 << 40,
    "B": 1,
}


def parse_size(value: str | None) -> int | None:
    """'650GB', '15MiB', '0' (off) or plain bytes; None stays None. Raises ValueError for anything else."""
    if value is None:
        return None
    text = value.strip().upper().replace(" ", "")
    number, mult = text, 1
    for suffix, factor in _FACTORS.items():
        if text.endswith(suffix):
            number, mult = text[: -len(suffix)], factor
            break
    try:
        return int(float(number) * mult)
    except ValueError:
        raise ValueError(f"{value!r} is not a size (examples: 64MiB, 650GB)") from None
