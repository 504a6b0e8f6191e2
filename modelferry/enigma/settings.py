"""Enigma settings: ``MODELFERRY_ENIGMA__*`` variables, built once by the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelferry.enigma.format import DEFAULT_CHUNK_SIZE
from modelferry.errors import UsageError
from modelferry.logs import register_secret
from modelferry.settings import SyncSettings, warn_unknown_env

Provider = Literal["local", "aws", "vault", "oci"]


class LocalKeySettings(BaseModel):
    """A 32-byte key in a file (raw, base64 or hex; a mounted Kubernetes Secret works)."""

    key_file: str | None = Field(None, description="The current key file")
    previous_key_files: list[str] = Field(
        default_factory=list, description="Older key files still accepted for decrypt and rewrap"
    )


class AWSKMSSettings(BaseModel):
    """AWS KMS (or a compatible endpoint). AWS_* variables are honoured by boto3."""

    key_id: str | None = Field(None, description="Key id, ARN or alias/NAME used to encrypt")
    endpoint_url: str | None = Field(None, description="KMS endpoint override; AWS_ENDPOINT_URL_KMS when unset")
    region: str | None = Field(None, description="Region; AWS_DEFAULT_REGION / AWS_REGION when unset")
    profile: str | None = Field(None, description="A named profile from ~/.aws/config")
    encryption_context: dict[str, str] = Field(
        default_factory=dict, description="Extra encryption context, stored in the file header"
    )


class VaultSettings(BaseModel):
    """HashiCorp Vault or OpenBao transit engine."""

    address: str | None = Field(None, description="Server URL; VAULT_ADDR / BAO_ADDR when unset")
    token: SecretStr | None = Field(None, description="Token; VAULT_TOKEN / BAO_TOKEN when unset")
    token_file: str | None = Field(None, description="A file holding the token (a mounted Secret)")
    key_name: str | None = Field(None, description="Transit key name used to encrypt")
    mount: str = Field("transit", description="Mount path of the transit engine")
    namespace: str | None = Field(None, description="Vault Enterprise namespace; VAULT_NAMESPACE when unset")
    verify_tls: bool = Field(True, description="Verify the server's TLS certificate")
    ca_bundle: str | None = Field(None, description="CA bundle; VAULT_CACERT when unset")
    timeout: float = Field(30.0, gt=0, description="Seconds per request")


class OCIVaultSettings(BaseModel):
    """Oracle OCI Vault and KMS, named as OME-Agent names them."""

    auth_type: Literal["user_principal", "instance_principal", "resource_principal"] = Field(
        "user_principal", description="How to authenticate"
    )
    config_file: str | None = Field(None, description="OCI config file; ~/.oci/config when unset")
    profile: str = Field("DEFAULT", description="Profile in the OCI config file")
    vault_id: str | None = Field(None, description="Vault OCID (OME-Agent vault_id)")
    compartment_id: str | None = Field(None, description="Compartment OCID (OME-Agent compartment_id)")
    key_name: str | None = Field(None, description="Master key display name (OME-Agent key_name)")
    key_id: str | None = Field(None, description="Master key OCID; looked up from key_name when unset")
    secret_name: str | None = Field(None, description="Secret holding the wrapped data key; <key_name>-dek")
    crypto_endpoint: str | None = Field(None, description="KMS crypto endpoint; from the vault when unset")
    management_endpoint: str | None = Field(None, description="KMS management endpoint; from the vault when unset")
    vault_endpoint: str | None = Field(None, description="Endpoint override of the KMS vault and Vault secrets APIs")
    secrets_endpoint: str | None = Field(None, description="Endpoint override of the secret retrieval API")


class EnigmaSettings(BaseSettings):
    """Settings of ``modelferry enigma`` and ``sync --decrypt``."""

    model_config = SettingsConfigDict(env_prefix="MODELFERRY_ENIGMA__", env_nested_delimiter="__", extra="ignore")

    provider: Provider = Field("local", description="KMS used to encrypt: local, aws, vault or oci")
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, description="Plaintext bytes per chunk when encrypting")
    workers: int = Field(0, ge=0, le=256, description="Threads for AES-GCM (0: one per core, up to 8)")
    local: LocalKeySettings = Field(default_factory=LocalKeySettings, description="Local key provider")
    aws: AWSKMSSettings = Field(default_factory=AWSKMSSettings, description="AWS KMS provider")
    vault: VaultSettings = Field(default_factory=VaultSettings, description="Vault/OpenBao transit provider")
    oci: OCIVaultSettings = Field(default_factory=OCIVaultSettings, description="OCI Vault/KMS provider")


class EnigmaEnv(BaseModel):
    """Only for :func:`modelferry.settings.warn_unknown_env`: the variable names enigma reads."""

    enigma: EnigmaSettings = Field(default_factory=EnigmaSettings, description="Enigma settings")


def load_enigma_settings(adjust: Callable[[EnigmaSettings], EnigmaSettings] | None = None) -> EnigmaSettings:
    """Environment (MODELFERRY_ENIGMA__*) first, then ``adjust`` (command-line values), validated together."""
    try:
        settings = EnigmaSettings()
        if adjust is not None:
            settings = adjust(settings)
        settings = EnigmaSettings.model_validate(settings.model_dump())
    except ValidationError as exc:
        raise UsageError(f"invalid enigma settings: {exc}", hint="Check MODELFERRY_ENIGMA__* and the options") from exc
    warn_unknown_env(EnigmaEnv, SyncSettings)
    if settings.vault.token is not None:
        register_secret(settings.vault.token.get_secret_value())
    return settings
