"""How each built-in backend opens its store (named by ``Backend.opener``); SDKs are imported here, lazily."""

from __future__ import annotations

from pathlib import Path

from modelferry.settings import Credentials, SyncSettings, TransferSettings
from modelferry.storage.base import Store
from modelferry.uri import StorageURI


def open_file(
    uri: StorageURI, credentials: Credentials, settings: SyncSettings, transfer: TransferSettings, follow_symlinks: bool
) -> Store:
    from modelferry.storage.local import LocalStore

    return LocalStore(uri, Path(uri.path), follow_symlinks=follow_symlinks)


def open_pvc(
    uri: StorageURI, credentials: Credentials, settings: SyncSettings, transfer: TransferSettings, follow_symlinks: bool
) -> Store:
    from modelferry.storage.local import LocalStore

    root = Path(settings.pvc_root) / uri.bucket
    if uri.prefix:
        root = root / uri.prefix
    return LocalStore(uri, root, follow_symlinks=follow_symlinks)


def open_hf(
    uri: StorageURI, credentials: Credentials, settings: SyncSettings, transfer: TransferSettings, follow_symlinks: bool
) -> Store:
    from modelferry.storage.hf import HFStore

    return HFStore(uri, credentials.hf, transfer, tls=settings.tls)


def open_s3(
    uri: StorageURI, credentials: Credentials, settings: SyncSettings, transfer: TransferSettings, follow_symlinks: bool
) -> Store:
    from modelferry.storage.s3 import S3Store

    return S3Store(uri, credentials.s3, transfer, tls=settings.tls)


def open_cos(
    uri: StorageURI, credentials: Credentials, settings: SyncSettings, transfer: TransferSettings, follow_symlinks: bool
) -> Store:
    from modelferry.storage.cos import open_cos_store

    return open_cos_store(uri, credentials, transfer, settings.tls)


def open_oci(
    uri: StorageURI, credentials: Credentials, settings: SyncSettings, transfer: TransferSettings, follow_symlinks: bool
) -> Store:
    from modelferry.storage.oracle import OracleStore

    return OracleStore(uri, credentials.oci, transfer, tls=settings.tls)
