"""Credentials from a model's ``spec.storage.key`` Secret: which keys the agent reads, and their values.

Every value is hostile input from the model's namespace: a value the agent uses that is not text is
refused by name (never echoed), and credential values are registered for masking before anything
can log them.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from modelferry.backends import SecretUse, secret_keys
from modelferry.errors import UsageError
from modelferry.logs import register_secret
from modelferry.settings import Credentials

log = logging.getLogger(__name__)

CREDENTIAL_MARKS = ("SECRET", "TOKEN", "PASSWORD", "PASSCODE", "ACCESS_KEY", "API_KEY", "PRIVATE", "CREDENTIAL")


def used_keys() -> set[str]:
    """The Secret keys the agent reads (each storage backend's)."""
    return {key for key, _, _ in secret_keys(SecretUse.AGENT)}


def is_credential_key(key: str) -> bool:
    """Keys whose values are masked in logs; bucket names, endpoints and regions stay readable."""
    return any(mark in key.upper() for mark in CREDENTIAL_MARKS)


def secret_values(secret: dict[str, Any], *, where: str) -> dict[str, str]:
    """A Secret's ``data`` (base64) and ``stringData`` as text; credential values registered for masking.

    A value the agent uses that is not UTF-8 text is a :class:`UsageError` naming the key (never the value);
    other undecodable keys are ignored.
    """
    raw: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            raw[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            if key in used_keys():
                raise UsageError(
                    f"Secret {where} key {key!r} is not UTF-8 text",
                    obj=where,
                    hint="Store the value as plain text (kubectl create secret generic --from-literal)",
                ) from None
            log.info("Secret %s: key %r is not UTF-8 text; ignored (the agent does not use it)", where, key)
    raw.update({str(k): str(v) for k, v in (secret.get("stringData") or {}).items()})
    for key, value in raw.items():
        if is_credential_key(key):
            register_secret(value)
    return raw


def credentials_from_secret(secret: dict[str, Any], base: Credentials, *, where: str = "") -> Credentials:
    """Credentials from a ``spec.storage.key`` Secret (AWS_*, HF_TOKEN / token keys), over ``base``.

    The keys are each backend's (modelferry.backends); for a field named by several keys the first one
    listed that holds a value wins.
    """
    raw = secret_values(secret, where=where or str((secret.get("metadata") or {}).get("name", "")))
    creds = base.model_copy(deep=True)
    found: dict[str, dict[str, str]] = {}
    for key, block, name in secret_keys(SecretUse.AGENT):
        if raw.get(key):
            found.setdefault(block, {}).setdefault(name, raw[key])
    for block, values in found.items():
        current = getattr(creds, block)
        setattr(creds, block, current.model_validate({**current.model_dump(), **values}))
    return creds
