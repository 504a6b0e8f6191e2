"""``hf://org/repo[@revision]``: the Hugging Face Hub or a mirror (a source only)."""

from __future__ import annotations

import re
from urllib.parse import unquote

from pydantic import BaseModel, Field, SecretStr

from modelferry.backends.grammar import fail
from modelferry.backends.registry import Backend, CliOption, Credentials, Location, Parts, SecretKey, SecretUse

_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class HFCredentials(BaseModel):
    """The Hugging Face Hub or a mirror."""

    token: SecretStr | None = Field(None, description="Access token; HF_TOKEN when unset")
    token_file: str | None = Field(None, description="A file holding the token (a mounted Secret)")
    endpoint: str | None = Field(None, description="Hub endpoint; HF_ENDPOINT or https://huggingface.co when unset")


def parse_hf(raw: str, scheme: str, rest: str, revision: str | None) -> Parts:
    """``hf://[datasets/|models/]org/repo[@revision]`` or ``hf://org/repo:revision``."""
    repo_type = "model"
    for kind, name in (("datasets/", "dataset"), ("models/", "model")):
        if rest.startswith(kind):
            repo_type, rest = name, rest[len(kind) :]
    rev = ""
    if "@" in rest:
        rest, rev = rest.split("@", 1)
    elif rest.count(":") == 1:
        rest, rev = rest.split(":", 1)
    rest = rest.strip("/")
    parts = rest.split("/")
    if len(parts) != 2 or not all(_PART_RE.match(p) for p in parts) or ".." in rest:
        raise fail(raw, "a Hugging Face repo id is 'org/name'")
    if rev == "" and ("@" in raw or raw.rstrip().endswith(":")):
        raise fail(raw, "empty revision")
    final_rev = revision or unquote(rev)
    return Parts(bucket=rest, revision=final_rev, repo_type=repo_type)


def format_hf(uri: Location) -> str:
    kind = "datasets/" if uri.repo_type == "dataset" else ""
    rev = f"@{uri.revision}" if uri.revision else ""
    return f"hf://{kind}{uri.bucket}{rev}"


BACKEND = Backend(
    name="hf",
    schemes=("hf",),
    form="hf://org/repo[@revision] (or hf://org/repo:revision)",
    parse=parse_hf,
    format=format_hf,
    opener="modelferry.storage.openers:open_hf",
    can_be_target=False,
    credentials=Credentials("hf", HFCredentials, "hf:// access", ("HF_TOKEN",)),
    secret_keys=(
        SecretKey("HF_TOKEN", "token", SecretUse.MODELSYNC | SecretUse.AGENT | SecretUse.SERVING),
        SecretKey("HF_ENDPOINT", "endpoint", SecretUse.MODELSYNC),
        # OME's BaseModel Secrets name the token so.
        SecretKey("token", "token", SecretUse.AGENT),
        SecretKey("hf_token", "token", SecretUse.AGENT),
    ),
    cli_options=(
        CliOption(
            "--hf-token", ("source.hf.token",), "Hugging Face token (env HF_TOKEN or MODELFERRY_SOURCE__HF__TOKEN)."
        ),
        CliOption(
            "--hf-token-file", ("source.hf.token_file",), "File holding the Hugging Face token (a mounted Secret)."
        ),
        CliOption("--hf-endpoint", ("source.hf.endpoint",), "Hub endpoint or mirror (env HF_ENDPOINT)."),
    ),
    loggers=("huggingface_hub", "httpx2", "httpcore2"),  # huggingface_hub 2.x: one INFO line per request otherwise
)
