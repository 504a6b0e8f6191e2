"""Storage backends behind one interface; :func:`open_store` picks one for a URI."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Protocol, cast

from modelferry.backends import backend_for
from modelferry.errors import UsageError
from modelferry.settings import Credentials, SyncSettings, TransferSettings
from modelferry.storage.base import ObjectInfo, Store, Upload
from modelferry.uri import StorageURI

__all__ = ["ObjectInfo", "Opener", "Store", "Upload", "open_store"]


class Opener(Protocol):
    """What a backend's ``opener`` is: one side's store for a URI of its scheme."""

    def __call__(
        self,
        uri: StorageURI,
        credentials: Credentials,
        settings: SyncSettings,
        transfer: TransferSettings,
        follow_symlinks: bool,
    ) -> Store: ...


def _opener(scheme: str) -> Opener:
    backend = backend_for(scheme)
    if backend.extra and importlib.util.find_spec(backend.sdk_module) is None:  # the SDK is an extra
        raise UsageError(f"{scheme}:// needs {backend.sdk}", hint=f"pip install 'modelferry[{backend.extra}]'")
    module, _, name = backend.opener.partition(":")
    return cast(Opener, getattr(importlib.import_module(module), name))


def open_store(
    uri: StorageURI,
    credentials: Credentials,
    *,
    settings: SyncSettings | None = None,
    transfer: TransferSettings | None = None,
    follow_symlinks: bool = False,
) -> Store:
    """A store for ``uri`` with one side's credentials. Heavy SDKs are imported only when used.

    The backend registered for the scheme (``modelferry.backends``) names the function that opens it.
    ``follow_symlinks`` (``sync --follow-symlinks``) lets a local source follow links that lead
    outside it; by default only links that stay inside are followed.
    """
    settings = settings or SyncSettings()
    transfer = transfer or settings.transfer
    try:
        opener = _opener(uri.scheme)
    except KeyError:
        raise UsageError(f"unsupported scheme {uri.scheme!r}") from None
    return opener(uri, credentials, settings, transfer, follow_symlinks)
