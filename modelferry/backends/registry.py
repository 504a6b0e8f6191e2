"""The storage backend registry: what each backend declares, in one place.

A :class:`Backend` names its URI scheme(s) and grammar, its credentials block (a pydantic model that
becomes ``source.<block>`` / ``target.<block>`` of the settings), the Kubernetes Secret keys the
controller, the node agent, training and serving map onto that block, its command-line options, the
loggers of its SDK, its pip extra, and where its store is opened. The URI parser, the settings,
``open_store``, the CLI and the controller read this table instead of keeping their own.

This module sits below ``modelferry.uri`` and ``modelferry.settings`` and imports no SDK. The store
itself lives in ``modelferry.storage`` (a floor above), so a backend names its opener as
``"module:function"``, resolved by ``open_store`` the moment a store is opened (the way packaging entry
points work); ``tests/unit/test_backend_registry.py`` checks that every opener points into
``modelferry.storage``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel


class Location(Protocol):
    """The fields of a parsed storage URI a grammar formats (``modelferry.uri.StorageURI``)."""

    @property
    def scheme(self) -> str: ...
    @property
    def bucket(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def revision(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def repo_type(self) -> str: ...


@dataclass(frozen=True)
class Parts:
    """What a grammar parsed out of ``scheme://rest``; fields a scheme does not use stay empty."""

    bucket: str = ""
    prefix: str = ""
    namespace: str = ""
    revision: str = ""
    path: str = ""
    repo_type: str = "model"


# parse(raw URI, scheme, the text after "scheme://", --revision) -> Parts; raise InvalidURIError
Parse = Callable[[str, str, str, "str | None"], Parts]
Format = Callable[[Location], str]


class SecretUse(enum.Flag):
    """Where the cluster side maps a Secret key onto a credentials field.

    ``MODELSYNC``: a ModelSync's credentialsSecret (by reference, ``MODELFERRY_<SIDE>__<BLOCK>__<FIELD>``);
    ``AGENT``: a BaseModel's ``spec.storage.key`` Secret, read by the node agent;
    ``TRAINING``: a TrainingRun's secretRef (optional references, ``MODELFERRY_SIDECAR_<SIDE>__...``);
    ``SERVING``: a ModelServer's pull Secret (passed to ``modelferry sync`` under the key's own name);
    ``DATA_CONNECTION``: a key of an OpenShift AI S3 data connection (the model-source Secret mode falls
    back to it).
    """

    MODELSYNC = enum.auto()
    AGENT = enum.auto()
    TRAINING = enum.auto()
    SERVING = enum.auto()
    DATA_CONNECTION = enum.auto()
    ALL = MODELSYNC | AGENT | TRAINING | SERVING


@dataclass(frozen=True)
class SecretKey:
    """One Secret key and the credentials field it sets (first key listed wins for a field)."""

    key: str
    field: str
    uses: SecretUse = SecretUse.ALL


@dataclass(frozen=True)
class Credentials:
    """The backend's settings block: ``source.<block>`` and ``target.<block>``."""

    block: str
    model: type[BaseModel]
    description: str
    # Standard variables of the SDK whose values the log scrubber must mask (``AWS_SECRET_ACCESS_KEY``).
    secret_env: tuple[str, ...] = ()


@dataclass(frozen=True)
class CliOption:
    """A command-line option of ``sync``, ``inspect`` and the OME-Agent commands.

    ``settings`` are the dotted settings it fills. Backends that declare the same ``flag`` share one
    option (the first declaration's help and choices), which then fills all their settings.
    """

    flag: str
    settings: tuple[str, ...]
    help: str
    choices: tuple[str, ...] = ()
    is_flag: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Backend:
    """Everything one storage backend declares."""

    name: str
    schemes: tuple[str, ...]
    form: str  # the accepted URI form(s), shown in every invalid-URI message
    parse: Parse
    format: Format
    opener: str  # "modelferry.storage.<module>:<function>", called as opener(uri, credentials, context)
    remote: bool = True  # a remote store (the cluster side may always read it), not a path in the pod
    bucket_store: bool = False  # objects under a bucket prefix (server-side copy, multipart targets)
    local_path: bool = False  # the URI is a local path (StorageURI.path), not bucket + prefix
    can_be_target: bool = True
    credentials: Credentials | None = None
    secret_keys: tuple[SecretKey, ...] = ()
    cli_options: tuple[CliOption, ...] = ()
    loggers: tuple[str, ...] = ()  # the SDK's loggers, kept at WARNING unless debugging
    extra: str | None = None  # the pip extra its SDK comes with, None when it is in the base install
    sdk: str = ""  # with an extra: the SDK's name for the missing-extra message ("the Oracle SDK")
    sdk_module: str = ""  # with an extra: the SDK's top-level module, looked for (not imported) before opening


@dataclass
class _Table:
    by_name: dict[str, Backend] = field(default_factory=dict)
    by_scheme: dict[str, Backend] = field(default_factory=dict)


_TABLE = _Table()


def register(backend: Backend) -> Backend:
    """Add ``backend``; a scheme or name already taken is a programming error."""
    taken = [s for s in backend.schemes if s in _TABLE.by_scheme]
    if backend.name in _TABLE.by_name or taken:
        raise ValueError(f"storage backend {backend.name!r} clashes with a registered one (schemes {taken})")
    _TABLE.by_name[backend.name] = backend
    for scheme in backend.schemes:
        _TABLE.by_scheme[scheme] = backend
    return backend


def unregister(name: str) -> None:
    """Remove a backend (tests that register a toy backend put the table back)."""
    backend = _TABLE.by_name.pop(name)
    for scheme in backend.schemes:
        _TABLE.by_scheme.pop(scheme, None)


def backends() -> tuple[Backend, ...]:
    """Every registered backend, in registration order."""
    return tuple(_TABLE.by_name.values())


def schemes() -> tuple[str, ...]:
    return tuple(_TABLE.by_scheme)


def find(scheme: str) -> Backend | None:
    """The backend of ``scheme`` (lower case), or None."""
    return _TABLE.by_scheme.get(scheme)


def backend_for(scheme: str) -> Backend:
    """The backend of a scheme the URI parser accepted."""
    backend = find(scheme)
    if backend is None:
        raise KeyError(f"no storage backend for scheme {scheme!r}")
    return backend


def accepted_forms() -> str:
    return ", ".join(b.form for b in backends())


def secret_keys(use: SecretUse) -> Iterator[tuple[str, str, str]]:
    """``(secret key, credentials block, field)`` for every key of every backend mapped where ``use`` says."""
    for backend in backends():
        if backend.credentials is None:
            continue
        for key in backend.secret_keys:
            if use & key.uses:
                yield key.key, backend.credentials.block, key.field


def credential_blocks() -> Iterator[Credentials]:
    for backend in backends():
        if backend.credentials is not None:
            yield backend.credentials


def cli_options() -> list[CliOption]:
    """The backends' options, one per flag (shared flags merged), in declaration order."""
    merged: dict[str, CliOption] = {}
    for backend in backends():
        for option in backend.cli_options:
            first = merged.get(option.flag)
            if first is None:
                merged[option.flag] = option
            else:
                merged[option.flag] = CliOption(
                    first.flag, (*first.settings, *option.settings), first.help, first.choices, first.is_flag
                )
    return list(merged.values())


def overrides(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted settings from parsed options (``values`` keyed by each option's ``dest``)."""
    out: dict[str, Any] = {}
    for option in cli_options():
        for dotted in option.settings:
            out[dotted] = values.get(option.dest)
    return out


def sdk_loggers() -> tuple[str, ...]:
    return tuple(name for backend in backends() for name in backend.loggers)
