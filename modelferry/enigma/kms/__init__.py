"""Key providers; :func:`make_provider` builds one from settings, importing its SDK only when used."""

from __future__ import annotations

import threading

from modelferry.enigma.kms.base import KeyProvider
from modelferry.enigma.settings import EnigmaSettings
from modelferry.errors import UsageError

__all__ = ["KeyProvider", "ProviderCache", "make_provider"]

# Names in key blocks -> settings names (the AWS provider writes "aws-kms" in files).
BLOCK_NAMES = {"local": "local", "aws-kms": "aws", "vault-transit": "vault", "oci-kms": "oci"}


def make_provider(name: str, settings: EnigmaSettings) -> KeyProvider:
    """A provider by settings name (local, aws, vault, oci) or by the name found in a key block."""
    name = BLOCK_NAMES.get(name, name)
    if name == "local":
        from modelferry.enigma.kms.local import LocalKeyProvider

        return LocalKeyProvider(settings.local.key_file, settings.local.previous_key_files)
    if name == "aws":
        from modelferry.enigma.kms.aws import AWSKMSProvider

        return AWSKMSProvider(settings.aws)
    if name == "vault":
        from modelferry.enigma.kms.vault import VaultTransitProvider

        return VaultTransitProvider(settings.vault)
    if name == "oci":
        try:
            from modelferry.enigma.kms.oracle import OCIVaultProvider
        except ImportError as exc:
            raise UsageError("the oci provider needs the Oracle SDK", hint="pip install 'modelferry[oci]'") from exc
        return OCIVaultProvider(settings.oci)
    raise UsageError(f"unknown KMS provider {name!r}", hint="Use local, aws, vault or oci")


class ProviderCache:
    """One provider per name for a whole run (decrypting many files opens one client)."""

    def __init__(self, settings: EnigmaSettings) -> None:
        self.settings = settings
        self._providers: dict[str, KeyProvider] = {}
        self._ome_key: bytes | None = None
        self._lock = threading.RLock()

    def get(self, name: str) -> KeyProvider:
        key = BLOCK_NAMES.get(name, name)
        if key not in self._providers:
            self._providers[key] = make_provider(key, self.settings)
        return self._providers[key]

    def ome_configured(self) -> bool:
        """True when the settings name an OCI vault data key, as OME-Agent's enigma uses (no network)."""
        oci = self.settings.oci
        return bool(oci.vault_id and (oci.key_name or oci.secret_name))

    def ome_data_key(self) -> bytes | None:
        """The data key of OME-encrypted files (the Vault secret ``<key_name>-dek``); None when not configured."""
        if not self.ome_configured():
            return None
        with self._lock:
            if self._ome_key is None:
                provider = self.get("oci")
                self._ome_key = provider.existing_data_key()  # type: ignore[attr-defined]
            return self._ome_key

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
        self._providers.clear()
