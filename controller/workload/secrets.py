"""Secrets as the controller reads them (pure): values as text, credentials told to the scrubber, refs by name."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from modelferry.logs import register_scoped_secrets

TRUE_VALUES = frozenset({"true", "1", "yes"})


def is_true(value: str | None) -> bool:
    """A flag is set only for a literal true, 1 or yes (any case); nothing else is ever interpreted."""
    return value is not None and value.strip().lower() in TRUE_VALUES


def secret_data(secret: dict[str, Any] | None) -> dict[str, str]:
    """A Secret's values as text: ``data`` (base64) merged with ``stringData`` (only seen on input)."""
    if not secret:
        return {}
    out: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value or "").decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            out[key] = ""
    for key, value in (secret.get("stringData") or {}).items():
        out[key] = str(value)
    return out


# Secret keys whose values are credentials: registered with the log scrubber when the controller reads them,
# so a value that comes back in a failure record, status or Event is masked (bucket names and regions are not).
CREDENTIAL_KEY_MARKERS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSCODE", "CREDENTIAL")


def register_credentials(secret: dict[str, Any] | None) -> None:
    """Tell the scrubber (:mod:`modelferry.logs`) the credential values of a Secret just read.

    They are masked in text about the Secret's namespace only (``scrub(text, namespace)``): a tenant's
    values never mask anything in another namespace, nor in the controller's own logs.
    """
    if not secret:
        return
    meta = secret.get("metadata") or {}
    values = {
        value
        for key, value in secret_data(secret).items()
        if any(marker in key.upper() for marker in CREDENTIAL_KEY_MARKERS)
    }
    register_scoped_secrets(str(meta.get("namespace") or ""), str(meta.get("name") or ""), values)


def undecodable_keys(secret: dict[str, Any] | None) -> list[str]:
    """Keys of a Secret's ``data`` that are not base64 of UTF-8 text (:func:`secret_data` reads them as "")."""
    bad = []
    for key, value in ((secret or {}).get("data") or {}).items():
        try:
            base64.b64decode(value or "").decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            bad.append(key)
    return sorted(bad)


def not_text_finding(secret_name: str, keys: list[str]) -> str:
    """The message for a Secret whose values modelferry cannot read as text."""
    return (
        f"Secret {secret_name!r}: the value of {', '.join(keys)} is not UTF-8 text (binary or another encoding); "
        "store it as text (stringData, or base64 of UTF-8 in data)"
    )


def secret_ref(env_name: str, secret: str, key: str, *, optional: bool = False) -> dict[str, Any]:
    """An env var that reads one key of a Secret by reference."""
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": env_name, "valueFrom": {"secretKeyRef": ref}}
