"""``oci://n/{namespace}/b/{bucket}/o/{prefix}``: Oracle Cloud Infrastructure Object Storage (OME's form)."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import unquote

from pydantic import BaseModel, Field, SecretStr

from modelferry.backends.grammar import clean_prefix, fail
from modelferry.backends.registry import Backend, CliOption, Credentials, Location, Parts

_OCI_RE = re.compile(r"^n/(?P<ns>[^/]+)/b/(?P<bucket>[^/]+)(?:/o(?:/(?P<prefix>.*))?)?$")


class OCICredentials(BaseModel):
    """Oracle Cloud Infrastructure Object Storage."""

    auth_type: Literal["user_principal", "instance_principal", "resource_principal", "api_key"] = Field(
        "user_principal",
        description="How to authenticate (OME's UserPrincipal/InstancePrincipal/ResourcePrincipal)",
    )
    config_file: str | None = Field(None, description="OCI config file; ~/.oci/config when unset")
    profile: str = Field("DEFAULT", description="Profile in the OCI config file")
    region: str | None = Field(None, description="Region, e.g. us-chicago-1 (overrides the config file)")
    endpoint: str | None = Field(None, description="Object Storage service endpoint override")
    obo_token: SecretStr | None = Field(
        None, description="On-behalf-of token sent signed as opc-obo-token (OME input_object_store.obo_token)"
    )


def parse_oci(raw: str, scheme: str, rest: str, revision: str | None) -> Parts:
    match = _OCI_RE.match(rest)
    if not match:
        raise fail(raw, "Oracle Object Storage URIs look like oci://n/{namespace}/b/{bucket}/o/{prefix}")
    return Parts(
        namespace=match["ns"], bucket=match["bucket"], prefix=clean_prefix(raw, unquote(match["prefix"] or ""))
    )


def format_oci(uri: Location) -> str:
    return f"oci://n/{uri.namespace}/b/{uri.bucket}/o/{uri.prefix}".rstrip("/")


_SIDES = ("source", "target")

BACKEND = Backend(
    name="oci",
    schemes=("oci",),
    form="oci://n/{namespace}/b/{bucket}/o/{prefix}",
    parse=parse_oci,
    format=format_oci,
    opener="modelferry.storage.openers:open_oci",
    bucket_store=True,
    credentials=Credentials("oci", OCICredentials, "oci:// access"),
    cli_options=(
        CliOption("--source-endpoint", ("source.oci.endpoint",), ""),
        CliOption("--target-endpoint", ("target.oci.endpoint",), ""),
        CliOption("--source-region", ("source.oci.region",), ""),
        CliOption("--target-region", ("target.oci.region",), ""),
        CliOption("--oci-config", tuple(f"{s}.oci.config_file" for s in _SIDES), "OCI config file (both sides)."),
        CliOption("--oci-profile", tuple(f"{s}.oci.profile" for s in _SIDES), "Profile in the OCI config file."),
        CliOption(
            "--oci-auth",
            tuple(f"{s}.oci.auth_type" for s in _SIDES),
            "OCI authentication.",
            choices=("user_principal", "instance_principal", "resource_principal", "api_key"),
        ),
    ),
    loggers=("oci",),
    extra="oci",
    sdk="the Oracle SDK",
    sdk_module="oci",
)
