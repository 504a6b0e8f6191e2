"""Checksum text as stores hand it out: quoted ETags and base64 Content-MD5.

Stores and the engine both read these forms, so they live below both.
"""

from __future__ import annotations

import base64
import binascii


def b64_to_hex(value: str) -> str | None:
    """Oracle/HTTP Content-MD5 (base64) to hex, or None when it is not base64 of 16 bytes."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 16 else None


def clean_etag(etag: str | None) -> str | None:
    return etag.strip().strip('"').lower() if etag else None
