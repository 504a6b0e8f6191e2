"""HashiCorp Vault / OpenBao transit: data keys, decrypt, server-side rewrap after rotation.

Plain HTTP with urllib3 (no SDK): ``POST /v1/<mount>/datakey/plaintext/<key>``,
``/decrypt/<key>``, ``/rewrap/<key>``, ``/encrypt/<key>``.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import urllib3

from modelferry.enigma.format import KeyBlock
from modelferry.enigma.kms.base import KeyProvider
from modelferry.enigma.settings import VaultSettings
from modelferry.errors import (
    AccessDeniedError,
    IntegrityError,
    ModelferryError,
    NotFoundError,
    RetryableError,
    UsageError,
)
from modelferry.logs import register_secret
from modelferry.tls import is_tls_failure, resolve_tls


def resolve_token(settings: VaultSettings) -> str:
    """The token: settings, then a token file, then VAULT_TOKEN / BAO_TOKEN, then ~/.vault-token."""
    if settings.token is not None:
        token = settings.token.get_secret_value()
    elif settings.token_file:
        try:
            token = Path(settings.token_file).read_text().strip()
        except OSError as exc:
            raise AccessDeniedError(f"cannot read the Vault token file {settings.token_file}: {exc.strerror}") from exc
    else:
        token = os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN") or ""
        home = Path.home() / ".vault-token"
        if not token and home.is_file():
            token = home.read_text().strip()
    if not token:
        raise AccessDeniedError(
            "no Vault/OpenBao token",
            hint="Set VAULT_TOKEN (or BAO_TOKEN), --vault-token-file or MODELFERRY_ENIGMA__VAULT__TOKEN",
        )
    register_secret(token)
    return token


def classify(status: int, errors: list[str], what: str, key: str) -> ModelferryError:
    """An HTTP error from transit -> modelferry.errors."""
    text = "; ".join(errors) or f"HTTP {status}"
    if status in (401, 403):
        return AccessDeniedError(
            f"Vault denied {what} with transit key {key}: {text}",
            obj=key,
            hint="Check the token and its policy (transit datakey/decrypt/rewrap on this key)",
        )
    if status == 404 or "not found" in text.lower():
        return NotFoundError(
            f"Vault transit key {key} does not exist ({text})", obj=key, hint="Check --key-id and the mount"
        )
    if status == 429 or status >= 500:
        return RetryableError(f"Vault is unavailable for {what}: {text}", obj=key)
    lowered = text.lower()
    if "disallowed" in lowered or ("version" in lowered and "too old" in lowered):
        return AccessDeniedError(
            f"Vault refuses {what}: the key version is retired or the key is disabled ({text})",
            obj=key,
            hint="Lower min_decryption_version of the transit key, or use a backup of a newer rewrap",
        )
    if "decrypt" in lowered or "cipher" in lowered or "authentication" in lowered:
        return IntegrityError(
            f"Vault cannot decrypt the data key: {text}", obj=key, hint="Wrong key or a corrupt key block"
        )
    return AccessDeniedError(f"Vault refused {what}: {text}", obj=key)


class VaultTransitProvider(KeyProvider):
    """Data keys from a transit key; the wrapped key is Vault's ``vault:vN:...`` ciphertext."""

    name = "vault-transit"

    def __init__(self, settings: VaultSettings) -> None:
        self.settings = settings
        address = settings.address or os.environ.get("VAULT_ADDR") or os.environ.get("BAO_ADDR")
        if not address:
            raise UsageError("the vault provider needs a server address", hint="Set VAULT_ADDR or --vault-addr")
        self.address = address.rstrip("/")
        self.token = resolve_token(settings)
        self.tls = resolve_tls(
            ca_bundle=settings.ca_bundle, verify=settings.verify_tls, own_variables=("VAULT_CACERT",)
        )
        self.http = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED" if self.tls.verify else "CERT_NONE",
            ca_certs=self.tls.cafile,
            timeout=urllib3.Timeout(connect=10, read=settings.timeout),
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=(502, 503, 504), allowed_methods=None),
        )
        self.namespace = settings.namespace or os.environ.get("VAULT_NAMESPACE")

    def _post(self, op: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.address}/v1/{self.settings.mount.strip('/')}/{op}/{key}"
        headers = {"X-Vault-Token": self.token, "Content-Type": "application/json"}
        if self.namespace:
            headers["X-Vault-Namespace"] = self.namespace
        try:
            resp = self.http.request("POST", url, body=json.dumps(body).encode(), headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            if is_tls_failure(exc):
                raise self.tls.failure(f"Vault at {self.address}", exc, what=key) from exc
            raise RetryableError(f"cannot reach Vault at {self.address} for {op}: {exc}", obj=key) from exc
        try:
            doc = json.loads(resp.data or b"{}")
        except ValueError:
            doc = {}
        if resp.status >= 400:
            raise classify(resp.status, [str(e) for e in doc.get("errors") or []], op, key)
        data: dict[str, Any] = doc.get("data") or {}
        return data

    def _key(self) -> str:
        if not self.settings.key_name:
            raise UsageError(
                "the vault provider needs a transit key name",
                hint="Pass --key-id or set MODELFERRY_ENIGMA__VAULT__KEY_NAME",
            )
        return self.settings.key_name

    def _block(self, key: str, ciphertext: str) -> KeyBlock:
        params = {"mount": self.settings.mount, "version": ciphertext.split(":")[1] if ":" in ciphertext else ""}
        return KeyBlock(self.name, key, ciphertext.encode("ascii"), params)

    def new_data_key(self) -> tuple[bytes, KeyBlock]:
        key = self._key()
        data = self._post("datakey/plaintext", key, {"bits": 256})
        plain = base64.b64decode(data["plaintext"])
        return plain, self._block(key, str(data["ciphertext"]))

    def wrap(self, data_key: bytes) -> KeyBlock:
        key = self._key()
        data = self._post("encrypt", key, {"plaintext": base64.b64encode(data_key).decode()})
        return self._block(key, str(data["ciphertext"]))

    def unwrap(self, block: KeyBlock) -> bytes:
        self.check_block(block)
        data = self._post("decrypt", block.key_id, {"ciphertext": block.wrapped_key.decode("ascii")})
        return base64.b64decode(data["plaintext"])

    def rewrap(self, block: KeyBlock) -> KeyBlock:
        """Transit's own rewrap: the data key stays inside Vault; the newest key version wraps it."""
        self.check_block(block)
        data = self._post("rewrap", block.key_id, {"ciphertext": block.wrapped_key.decode("ascii")})
        return self._block(block.key_id, str(data["ciphertext"]))

    def close(self) -> None:
        self.http.clear()
