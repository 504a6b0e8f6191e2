"""The storage backend registry: one declaration per backend, read by the parser, open_store, settings,
the CLI and the controller's Secret-key tables. A toy backend registered here is picked up by all of them."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from pydantic import BaseModel, Field, SecretStr

from modelferry.backends import Backend, CliOption, Credentials, SecretKey, backends, register, unregister
from modelferry.backends.grammar import format_bucket, parse_bucket
from modelferry.backends.registry import cli_options, overrides
from modelferry.cli.sync import credential_options, overrides_from
from modelferry.controller.agent.secretcreds import credentials_from_secret, used_keys
from modelferry.controller.config.controller import ControllerSettings
from modelferry.controller.serving.render import render
from modelferry.controller.sync.modelsync import plan_modelsync_job
from modelferry.controller.training import RenderContext
from modelferry.controller.training import render as render_training
from modelferry.errors import InvalidURIError, UsageError
from modelferry.settings import Credentials as SettingsCredentials
from modelferry.settings import SyncSettings, credentials_model
from modelferry.storage import Store, open_store
from modelferry.storage.local import LocalStore
from modelferry.uri import StorageURI, parse_uri
from tests.unit.test_serving_render import CTX, server
from tests.unit.test_training_render import tr_with

ROOT = Path(__file__).resolve().parents[2]
OPENED: list[StorageURI] = []


class ToyCredentials(BaseModel):
    """The toy store's credentials."""

    token: SecretStr | None = Field(None, description="Toy token")


def open_toy(
    uri: StorageURI, credentials: object, settings: SyncSettings, transfer: object, follow_symlinks: bool
) -> Store:
    """The toy store: a local directory per bucket under the pvc root."""
    OPENED.append(uri)
    return LocalStore(uri, Path(settings.pvc_root) / uri.bucket / uri.prefix)


TOY = Backend(
    name="toy",
    schemes=("toy",),
    form="toy://bucket[/prefix]",
    parse=parse_bucket,
    format=format_bucket,
    opener=f"{__name__}:open_toy",
    bucket_store=True,
    credentials=Credentials("toy", ToyCredentials, "toy:// access", ("TOY_TOKEN",)),
    secret_keys=(SecretKey("TOY_TOKEN", "token"),),
    cli_options=(CliOption("--toy-token", ("source.toy.token",), "Toy token."),),
)


@pytest.fixture
def toy() -> Iterator[Backend]:
    register(TOY)
    try:
        yield TOY
    finally:
        unregister("toy")


def test_a_registered_backend_reaches_the_parser_open_store_and_settings(toy: Backend, tmp_path: Path) -> None:
    uri = parse_uri("TOY://bucket/models/llama")
    assert (uri.scheme, uri.bucket, uri.prefix, str(uri), uri.is_bucket, uri.is_remote) == (
        "toy", "bucket", "models/llama", "toy://bucket/models/llama", True, True,
    )  # fmt: skip
    with pytest.raises(InvalidURIError) as bad:
        parse_uri("s3://bucket/../x")
    assert "toy://bucket[/prefix]" in str(bad.value)  # every invalid-URI message lists the new form
    (tmp_path / "bucket" / "models" / "llama").mkdir(parents=True)
    store = open_store(uri, SettingsCredentials(), settings=SyncSettings(pvc_root=str(tmp_path)))
    assert isinstance(store, LocalStore) and OPENED[-1] == uri
    assert "toy" in credentials_model().model_fields  # the settings' credentials blocks
    assert overrides({"toy_token": "t"})["source.toy.token"] == "t"
    assert [o.flag for o in cli_options()][-1] == "--toy-token"


def test_a_registered_backend_reaches_the_credential_options(toy: Backend) -> None:
    seen: dict[str, object] = {}

    @click.command()
    @credential_options
    def command(**kw: object) -> None:
        seen.update(overrides_from(kw))

    result = CliRunner().invoke(command, ["--toy-token", "t", "--source-endpoint", "http://e"])
    assert result.exit_code == 0, result.output
    assert seen["source.toy.token"] == "t"
    assert seen["source.s3.endpoint_url"] == seen["source.oci.endpoint"] == "http://e"


def test_a_registered_backend_reaches_the_controllers_secret_key_tables(toy: Backend) -> None:
    # ModelSync: the Secret key is mapped, by reference, onto the toy block.
    sync = {"apiVersion": "modelferry.io/v1alpha1", "kind": "ModelSync",
            "metadata": {"name": "m", "namespace": "demo", "uid": "u", "generation": 1},
            "spec": {"source": {"uri": "toy://bucket/p", "credentialsSecret": "toy-creds"},
                     "target": {"uri": "s3://target-bucket/q"}}}  # fmt: skip
    secrets = {"toy-creds": {"metadata": {"name": "toy-creds"}, "stringData": {"TOY_TOKEN": "sekrit"}}}
    plan = plan_modelsync_job(sync, secrets, ControllerSettings())
    assert plan.error is None and plan.job is not None
    [container] = plan.job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["MODELFERRY_SOURCE__TOY__TOKEN"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("toy-creds", "TOY_TOKEN")
    assert "sekrit" not in json.dumps(plan.job)
    # TrainingRun: the sidecar gets an optional reference.
    run = tr_with(dataset={"uri": "toy://bucket/data", "secretRef": "toy-creds"})
    rendered = render_training(run, RenderContext())
    assert rendered.problem is None, rendered.problem
    sidecar = rendered.objects[0]["spec"]["template"]["spec"]["containers"][1]
    assert "MODELFERRY_SIDECAR_SOURCE__TOY__TOKEN" in {e["name"] for e in sidecar["env"]}
    # ModelServer: the pull init container gets the key under its own name.
    result = render(server("vllm", {"uri": "toy://bucket/llama", "secretRef": "toy-creds"}), CTX)
    assert result.problem is None, result.problem
    [fetch] = result.objects[0]["spec"]["template"]["spec"]["initContainers"]
    assert "TOY_TOKEN" in {e["name"] for e in fetch["env"]}
    # The node agent reads the key (and would refuse it if it were not text).
    assert "TOY_TOKEN" in used_keys()


def test_the_toy_backend_leaves_no_trace_once_unregistered() -> None:
    register(TOY)
    unregister("toy")
    with pytest.raises(InvalidURIError, match="unknown scheme 'toy'"):
        parse_uri("toy://bucket/p")
    assert "TOY_TOKEN" not in used_keys()


def test_a_scheme_cannot_be_registered_twice(toy: Backend) -> None:
    with pytest.raises(ValueError, match="clashes"):
        register(Backend(name="toy2", schemes=("toy",), form="", parse=parse_bucket, format=format_bucket, opener=""))
    assert [b.name for b in backends()].count("toy") == 1


def test_a_missing_extra_is_a_usage_error_with_the_install_line() -> None:
    extra = Backend(
        name="needsdk", schemes=("needsdk",), form="needsdk://bucket[/prefix]", parse=parse_bucket,
        format=format_bucket, opener=f"{__name__}:open_toy", extra="needsdk", sdk="the NeedSDK client",
        sdk_module="modelferry_test_no_such_sdk",
    )  # fmt: skip
    register(extra)
    try:
        with pytest.raises(UsageError) as info:
            open_store(parse_uri("needsdk://bucket/x"), SettingsCredentials())
    finally:
        unregister("needsdk")
    assert "needsdk:// needs the NeedSDK client" in str(info.value)
    assert info.value.hint == "pip install 'modelferry[needsdk]'"


def test_every_builtin_opener_is_a_function_in_the_storage_floor() -> None:
    for backend in backends():
        module, _, name = backend.opener.partition(":")
        assert module.startswith("modelferry.storage."), backend.name
        assert callable(getattr(importlib.import_module(module), name)), backend.opener


def test_the_typed_credentials_view_matches_the_registry() -> None:
    blocks = {b.credentials.block: b.credentials.model for b in backends() if b.credentials}
    fields = SettingsCredentials.model_fields
    assert list(fields) == list(blocks)
    assert {name: f.annotation for name, f in fields.items()} == blocks
    for name, model in blocks.items():
        assert isinstance(getattr(SettingsCredentials(), name), model)


def test_agent_credentials_keep_the_first_key_per_field() -> None:
    secret = {"metadata": {"name": "s"},
              "stringData": {"AWS_ENDPOINT_URL": "http://second", "AWS_S3_ENDPOINT": "http://first",
                             "AWS_REGION": "r2", "hf_token": "later", "token": "sooner", "AWS_SESSION_TOKEN": "x"}}  # fmt: skip
    creds = credentials_from_secret(secret, SettingsCredentials())
    assert (creds.s3.endpoint_url, creds.s3.region) == ("http://first", "r2")
    assert creds.hf.token is not None and creds.hf.token.get_secret_value() == "sooner"
    assert creds.s3.session_token is None  # the agent never read the session token; it still does not


def test_importing_the_registry_parser_settings_and_open_store_loads_no_sdk() -> None:
    code = (
        "import sys\n"
        "import modelferry.backends, modelferry.uri, modelferry.settings, modelferry.storage, modelferry.source_policy\n"
        "from modelferry.backends.registry import cli_options, secret_keys, SecretUse\n"
        "from modelferry.uri import parse_uri\n"
        "for u in ('hf://o/r', 's3://bb/p', 'cos://bb/p', 'oci://n/ns/b/bb/o/p', 'pvc://c/p', '/tmp'):\n"
        "    str(parse_uri(u))\n"
        "list(secret_keys(SecretUse.ALL)); cli_options(); modelferry.settings.SyncSettings()\n"
        "heavy = ('boto3', 'botocore', 's3transfer', 'oci', 'huggingface_hub')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_view_mypy_sees_names_registered_blocks_with_their_models() -> None:
    """``settings.Credentials`` as mypy sees it (under TYPE_CHECKING) may list only blocks the registry has."""
    tree = ast.parse((ROOT / "modelferry" / "settings.py").read_text())
    [view] = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Credentials"]
    typed = {
        stmt.target.id: ast.unparse(stmt.annotation)
        for stmt in view.body
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
    }
    blocks = {b.credentials.block: b.credentials.model.__name__ for b in backends() if b.credentials}
    assert typed and typed.items() <= blocks.items()
