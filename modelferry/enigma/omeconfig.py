"""OME-Agent ``enigma --config x.yaml`` compatibility: the keys its enigma agent reads.

YAML keys (and ``OME_AGENT_*`` variables, which win, as with Viper):
``local_path`` (or ``model_store_directory``), ``auth_type`` (UserPrincipal,
InstancePrincipal, ResourcePrincipal), ``profile``, ``compartment_id``,
``vault_id``, ``key_name``, ``secret_name`` (default ``<key_name>-dek``) and
``disable_model_decryption``. Other OME-Agent keys are accepted and ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelferry.enigma.settings import EnigmaSettings, OCIVaultSettings
from modelferry.errors import UsageError

AUTH_TYPES = {
    "userprincipal": "user_principal",
    "instanceprincipal": "instance_principal",
    "resourceprincipal": "resource_principal",
}
ENV_KEYS = (
    "local_path",
    "model_store_directory",
    "auth_type",
    "profile",
    "compartment_id",
    "vault_id",
    "key_name",
    "secret_name",
    "disable_model_decryption",
)


class OMEEnigmaConfig(BaseModel):
    """The part of an OME-Agent configuration that its enigma agent uses."""

    model_config = ConfigDict(extra="ignore")

    local_path: str | None = Field(None, description="Directory of model weights to decrypt in place")
    model_store_directory: str | None = Field(None, description="Fallback for local_path")
    auth_type: str = Field("UserPrincipal", description="UserPrincipal, InstancePrincipal or ResourcePrincipal")
    profile: str = Field("DEFAULT", description="Profile in the OCI config file")
    compartment_id: str | None = Field(None, description="Compartment of the vault and key")
    vault_id: str | None = Field(None, description="Vault OCID")
    key_name: str | None = Field(None, description="Master key display name")
    secret_name: str | None = Field(None, description="Secret with the data key; <key_name>-dek")
    disable_model_decryption: bool = Field(False, description="Do nothing (weights are not encrypted)")

    @property
    def path(self) -> str:
        path = self.local_path or self.model_store_directory
        if not path:
            raise UsageError("the OME-Agent config has no local_path", hint="Set local_path or OME_AGENT_LOCAL_PATH")
        return path

    def apply(self, settings: EnigmaSettings) -> EnigmaSettings:
        """Enigma settings for the oci provider with these values on top."""
        auth = AUTH_TYPES.get(self.auth_type.replace("_", "").lower())
        if auth is None:
            raise UsageError(
                f"unknown OME-Agent auth_type {self.auth_type!r}",
                hint="Use UserPrincipal, InstancePrincipal or ResourcePrincipal",
            )
        oci = settings.oci.model_copy(
            update={
                "auth_type": auth,
                "profile": self.profile,
                "compartment_id": self.compartment_id or settings.oci.compartment_id,
                "vault_id": self.vault_id or settings.oci.vault_id,
                "key_name": self.key_name or settings.oci.key_name,
                "secret_name": self.secret_name or settings.oci.secret_name,
            }
        )
        return settings.model_copy(update={"provider": "oci", "oci": OCIVaultSettings.model_validate(oci.model_dump())})


def load_ome_config(path: str, environ: dict[str, str] | None = None) -> OMEEnigmaConfig:
    """Read the YAML file, then let ``OME_AGENT_*`` variables override it."""
    env = os.environ if environ is None else environ
    try:
        doc: Any = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise UsageError(f"cannot read the OME-Agent config {path}: {exc.strerror}", obj=path) from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"the OME-Agent config {path} is not valid YAML: {exc}", obj=path) from exc
    if not isinstance(doc, dict):
        raise UsageError(f"the OME-Agent config {path} must be a mapping", obj=path)
    for key in ENV_KEYS:
        value = env.get(f"OME_AGENT_{key.upper()}")
        if value is not None:
            doc[key] = value
    try:
        return OMEEnigmaConfig.model_validate(doc)
    except ValidationError as exc:
        raise UsageError(f"invalid OME-Agent config {path}: {exc}", obj=path) from exc
