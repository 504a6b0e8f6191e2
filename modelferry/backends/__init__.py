"""The storage backends, declared (light: no SDK is imported here); see :mod:`modelferry.backends.registry`.

Adding a backend: a declaration module here, its store under ``modelferry/storage/``, and one
``register`` line below (CONTRIBUTING.md, "Adding a storage backend").
"""

from __future__ import annotations

from modelferry.backends import cos, hf, local, oci, s3
from modelferry.backends.registry import (
    Backend,
    CliOption,
    Credentials,
    Parts,
    SecretKey,
    SecretUse,
    backend_for,
    backends,
    find,
    register,
    secret_keys,
    unregister,
)

__all__ = [
    "Backend",
    "CliOption",
    "Credentials",
    "Parts",
    "SecretKey",
    "SecretUse",
    "backend_for",
    "backends",
    "find",
    "register",
    "secret_keys",
    "unregister",
]

# Registration order is the order of the settings blocks, the CLI options and the mapped Secret keys.
register(s3.BACKEND)
register(hf.BACKEND)
register(cos.BACKEND)
register(oci.BACKEND)
register(local.PVC)
register(local.FILE)
