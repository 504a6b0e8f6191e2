"""Storage backends behind one interface; :func:`open_store` picks one for a URI."""

from __future__ import annotations

from pathlib import Path

from modelferry.errors import UsageError
from modelferry.settings import Credentials, SyncSettings, TransferSettings
from modelferry.storage.base import ObjectInfo, Store, Upload
from modelferry.uri import StorageURI

__all__ = ["ObjectInfo", "Store", "Upload", "open_store"]


def open_store(
    uri: StorageURI,
    credentials: Credentials,
    *,
    settings: SyncSettings | None = None,
    transfer: TransferSettings | None = None,
    follow_symlinks: bool = False,
) -> Store:
    """A store for ``uri`` with one side's credentials. Heavy SDKs are imported only when used.

    ``follow_symlinks`` (``sync --follow-symlinks``) lets a local source follow links that lead
    outside it; by default only links that stay inside are followed.
    """
    settings = settings or SyncSettings()
    transfer = transfer or settings.transfer
    if uri.scheme == "file":
        from modelferry.storage.local import LocalStore

        return LocalStore(uri, Path(uri.path), follow_symlinks=follow_symlinks)
    if uri.scheme == "pvc":
        from modelferry.storage.local import LocalStore

        root = Path(settings.pvc_root) / uri.bucket
        if uri.prefix:
            root = root / uri.prefix
        return LocalStore(uri, root, follow_symlinks=follow_symlinks)
    if uri.scheme == "hf":
        from modelferry.storage.hf import HFStore

        return HFStore(uri, credentials.hf, transfer, tls=settings.tls)
    if uri.scheme == "s3":
        from modelferry.storage.s3 import S3Store

        return S3Store(uri, credentials.s3, transfer, tls=settings.tls)
    if uri.scheme == "cos":
        from modelferry.storage.cos import open_cos_store

        return open_cos_store(uri, credentials, transfer, settings.tls)
    if uri.scheme == "oci":
        try:
            from modelferry.storage.oracle import OracleStore
        except ImportError as exc:  # the oci SDK is an extra
            raise UsageError("oci:// needs the Oracle SDK", hint="pip install 'modelferry[oci]'") from exc
        return OracleStore(uri, credentials.oci, transfer, tls=settings.tls)
    raise UsageError(f"unsupported scheme {uri.scheme!r}")
