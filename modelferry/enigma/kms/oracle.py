"""Oracle OCI Vault and KMS through the ``oci`` SDK, keeping OME-Agent's layout.

OME-Agent keeps one data encryption key (DEK) per model as a Vault secret named
``<key_name>-dek``. Here the secret's content is the DEK wrapped by the master
key ``key_name`` (the KMS ciphertext, base64). Encrypting reads that secret (and
creates it, with a DEK from ``generateDataEncryptionKey``, when it does not
exist yet); every file header also carries the wrapped DEK, so decrypting needs
only the KMS ``decrypt`` call. Per-file keys are still distinct: each file
derives its chunk key from the DEK with its own random salt.
"""

from __future__ import annotations

import base64
import logging
import threading
from typing import Any

import oci

from modelferry.enigma.format import KeyBlock
from modelferry.enigma.kms.base import KeyProvider
from modelferry.enigma.settings import OCIVaultSettings
from modelferry.errors import (
    AccessDeniedError,
    IntegrityError,
    ModelferryError,
    NotFoundError,
    RetryableError,
    UsageError,
)
from modelferry.tls import is_tls_failure, pin_requests_session, resolve_tls

log = logging.getLogger(__name__)


def translate(exc: Exception, what: str, obj: str) -> ModelferryError:
    """oci exceptions -> modelferry.errors, naming the key, vault or secret."""
    if isinstance(exc, oci.exceptions.ServiceError):
        code, status, message = exc.code, exc.status, exc.message
        if status == 409 or code == "IncorrectState":
            return AccessDeniedError(
                f"OCI KMS key is disabled or not usable for {what} ({code}: {message})",
                obj=obj,
                hint="Enable the key in the OCI Vault, or rewrap the files under another key",
            )
        if status in (401, 403):
            return AccessDeniedError(
                f"OCI denied {what}: {code} {message}",
                obj=obj,
                hint="Check the OCI credentials and the policies (use keys, read secret-bundles)",
            )
        if status == 404:
            return NotFoundError(
                f"OCI says {obj} was not found or is not authorized during {what} ({message})",
                obj=obj,
                hint="Check vault_id, key_name/key id, secret_name and the compartment",
            )
        if status == 400 and what == "decrypt":
            return IntegrityError(
                f"OCI KMS cannot decrypt the data key ({message}): wrong key or a corrupt key block", obj=obj
            )
        if status == 429 or status >= 500:
            return RetryableError(f"OCI is unavailable for {what}: {code} {message}", obj=obj)
        return AccessDeniedError(f"OCI refused {what}: {code} {message}", obj=obj)
    if isinstance(exc, (oci.exceptions.RequestException, oci.exceptions.ConnectTimeout)):
        return RetryableError(f"cannot reach OCI for {what}: {exc}", obj=obj)
    if isinstance(exc, (oci.exceptions.ConfigFileNotFound, oci.exceptions.InvalidConfig)):
        return UsageError(f"OCI configuration problem: {exc}", hint="Check --oci-config and --oci-profile")
    return RetryableError(f"OCI call failed during {what}: {exc}", obj=obj)


def _auth(settings: OCIVaultSettings) -> tuple[dict[str, Any], Any]:
    """(config, signer) for the chosen authentication."""
    try:
        if settings.auth_type == "instance_principal":
            signer = oci.auth.signers.InstancePrincipalsSecurityTokenSigner()
            return {"region": signer.region}, signer
        if settings.auth_type == "resource_principal":
            signer = oci.auth.signers.get_resource_principals_signer()
            return {"region": signer.region}, signer
        path = settings.config_file or oci.config.DEFAULT_LOCATION
        config: dict[str, Any] = oci.config.from_file(path, settings.profile)
        return config, None
    except Exception as exc:
        raise translate(exc, "authentication", settings.config_file or "~/.oci/config") from exc


class OCIVaultProvider(KeyProvider):
    """Master key in an OCI Vault; the model DEK kept as the secret ``<key_name>-dek``."""

    name = "oci-kms"

    def __init__(self, settings: OCIVaultSettings) -> None:
        self.settings = settings
        self.config, self.signer = _auth(settings)
        self.tls = resolve_tls()
        self._lock = threading.Lock()
        self._crypto: dict[str, Any] = {}
        self._endpoints: tuple[str, str] | None = None
        self._dek: tuple[bytes, KeyBlock] | None = None

    def _kwargs(self, endpoint: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"signer": self.signer} if self.signer is not None else {}
        if endpoint:
            kwargs["service_endpoint"] = endpoint
        return kwargs

    def _client(self, cls: Any, endpoint: str | None) -> Any:
        """An SDK client of ``cls`` at ``endpoint`` that trusts the process's TLS setting."""
        client = cls(self.config, **self._kwargs(endpoint))
        pin_requests_session(client.base_client.session, self.tls)
        return client

    def _call(self, what: str, obj: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs).data
        except Exception as exc:
            if not isinstance(exc, oci.exceptions.ServiceError) and is_tls_failure(exc):
                raise self.tls.failure("OCI Vault", exc, what=obj) from exc
            raise translate(exc, what, obj) from exc

    def _vault_id(self, block: KeyBlock | None = None) -> str:
        vault = self.settings.vault_id or (str(block.params.get("vault_id") or "") if block else "")
        if not vault:
            raise UsageError("the oci provider needs a vault OCID", hint="Set vault_id / --oci-vault-id")
        return vault

    def _endpoints_for(self, vault_id: str) -> tuple[str, str]:
        """(crypto, management) endpoints: from settings, else from the vault."""
        if self.settings.crypto_endpoint and self.settings.management_endpoint:
            return self.settings.crypto_endpoint, self.settings.management_endpoint
        if self._endpoints is None:
            client = self._client(oci.key_management.KmsVaultClient, self.settings.vault_endpoint)
            vault = self._call("get_vault", vault_id, client.get_vault, vault_id)
            self._endpoints = (
                self.settings.crypto_endpoint or vault.crypto_endpoint,
                self.settings.management_endpoint or vault.management_endpoint,
            )
        return self._endpoints

    def _crypto_client(self, vault_id: str) -> Any:
        with self._lock:
            if vault_id not in self._crypto:
                crypto, _ = self._endpoints_for(vault_id)
                self._crypto[vault_id] = self._client(oci.key_management.KmsCryptoClient, crypto)
            return self._crypto[vault_id]

    def _key_id(self, vault_id: str) -> str:
        if self.settings.key_id:
            return self.settings.key_id
        name, compartment = self.settings.key_name, self.settings.compartment_id
        if not name or not compartment:
            raise UsageError(
                "the oci provider needs key_id, or key_name and compartment_id", hint="Set --key-id or --oci-key-name"
            )
        _, management = self._endpoints_for(vault_id)
        client = self._client(oci.key_management.KmsManagementClient, management)
        keys = self._call("list_keys", compartment, client.list_keys, compartment)
        usable = [k for k in keys if k.display_name == name and k.lifecycle_state == "ENABLED"]
        if not usable:
            state = next((k.lifecycle_state for k in keys if k.display_name == name), None)
            if state is not None:
                raise AccessDeniedError(f"OCI KMS key {name!r} is {state}", obj=name, hint="Enable the key")
            raise NotFoundError(f"no OCI KMS key named {name!r} in the compartment", obj=compartment)
        return str(usable[0].id)

    def _secret_name(self) -> str:
        if self.settings.secret_name:
            return self.settings.secret_name
        if not self.settings.key_name:
            raise UsageError("the oci provider needs secret_name or key_name", hint="Set --oci-key-name")
        return f"{self.settings.key_name}-dek"

    def _block(self, key_id: str, vault_id: str, ciphertext: str) -> KeyBlock:
        key_name = self.settings.key_name
        secret = self.settings.secret_name or (f"{key_name}-dek" if key_name else "")
        params = {"vault_id": vault_id, "secret_name": secret}
        return KeyBlock(self.name, key_id, ciphertext.encode("ascii"), params)

    def new_data_key(self) -> tuple[bytes, KeyBlock]:
        """The model's DEK from the secret ``<key_name>-dek``, created on first use (as OME-Agent)."""
        with self._lock:
            cached = self._dek
        if cached is not None:
            return cached
        vault_id = self._vault_id()
        key_id = self._key_id(vault_id)
        secret_name = self._secret_name()
        ciphertext = self._read_dek_secret(vault_id, secret_name)
        if ciphertext is None:
            ciphertext = self._create_dek_secret(vault_id, key_id, secret_name)
        block = self._block(key_id, vault_id, ciphertext)
        result = (self.unwrap(block), block)
        with self._lock:
            self._dek = result
        return result

    def _read_dek_secret(self, vault_id: str, secret_name: str) -> str | None:
        """The wrapped data key held by the secret (KMS ciphertext), or None when there is no such secret."""
        secrets = self._client(oci.secrets.SecretsClient, self.settings.secrets_endpoint)
        try:
            bundle = secrets.get_secret_bundle_by_name(secret_name, vault_id=vault_id).data
        except oci.exceptions.ServiceError as exc:
            if exc.status != 404:
                raise translate(exc, "get_secret_bundle_by_name", secret_name) from exc
            return None
        except Exception as exc:
            raise translate(exc, "get_secret_bundle_by_name", secret_name) from exc
        log.info("using the data key in OCI secret %s", secret_name)
        return base64.b64decode(bundle.secret_bundle_content.content).decode("ascii")

    def existing_data_key(self) -> bytes:
        """The model's data key from the secret ``<key_name>-dek`` (OME-encrypted files); never creates one."""
        vault_id = self._vault_id()
        secret_name = self._secret_name()
        ciphertext = self._read_dek_secret(vault_id, secret_name)
        if ciphertext is None:
            raise NotFoundError(
                f"OCI secret {secret_name} (the data key of OME-encrypted files) does not exist in the vault",
                obj=secret_name,
                hint="Check vault_id, key_name and secret_name (OME's default is <key_name>-dek)",
            )
        return self.unwrap(self._block(self._key_id(vault_id), vault_id, ciphertext))

    def _create_dek_secret(self, vault_id: str, key_id: str, secret_name: str) -> str:
        crypto = self._crypto_client(vault_id)
        details = oci.key_management.models.GenerateKeyDetails(
            key_id=key_id,
            include_plaintext_key=False,
            key_shape=oci.key_management.models.KeyShape(algorithm="AES", length=32),
        )
        generated = self._call("generateDataEncryptionKey", key_id, crypto.generate_data_encryption_key, details)
        ciphertext = str(generated.ciphertext)
        compartment = self.settings.compartment_id
        if not compartment:
            raise UsageError("creating the data key secret needs compartment_id", hint="Set --oci-compartment-id")
        vaults = self._client(oci.vault.VaultsClient, self.settings.vault_endpoint)
        content = oci.vault.models.Base64SecretContentDetails(
            content_type="BASE64", content=base64.b64encode(ciphertext.encode("ascii")).decode("ascii")
        )
        create = oci.vault.models.CreateSecretDetails(
            compartment_id=compartment,
            vault_id=vault_id,
            key_id=key_id,
            secret_name=secret_name,
            secret_content=content,
        )
        self._call("create_secret", secret_name, vaults.create_secret, create)
        log.info("created OCI secret %s holding a new wrapped data key", secret_name)
        return ciphertext

    def wrap(self, data_key: bytes) -> KeyBlock:
        vault_id = self._vault_id()
        key_id = self._key_id(vault_id)
        details = oci.key_management.models.EncryptDataDetails(
            key_id=key_id, plaintext=base64.b64encode(data_key).decode("ascii")
        )
        out = self._call("encrypt", key_id, self._crypto_client(vault_id).encrypt, details)
        return self._block(key_id, vault_id, str(out.ciphertext))

    def unwrap(self, block: KeyBlock) -> bytes:
        self.check_block(block)
        vault_id = self._vault_id(block)
        details = oci.key_management.models.DecryptDataDetails(
            key_id=block.key_id, ciphertext=block.wrapped_key.decode("ascii")
        )
        out = self._call("decrypt", block.key_id, self._crypto_client(vault_id).decrypt, details)
        return base64.b64decode(out.plaintext)

    def rewrap(self, block: KeyBlock) -> KeyBlock:
        """Wrap the data key again under the current version of the configured key (or the file's key)."""
        data_key = self.unwrap(block)
        if self.settings.key_id or self.settings.key_name:
            return self.wrap(data_key)
        vault_id = self._vault_id(block)
        details = oci.key_management.models.EncryptDataDetails(
            key_id=block.key_id, plaintext=base64.b64encode(data_key).decode("ascii")
        )
        out = self._call("encrypt", block.key_id, self._crypto_client(vault_id).encrypt, details)
        return KeyBlock(self.name, block.key_id, str(out.ciphertext).encode("ascii"), dict(block.params))
