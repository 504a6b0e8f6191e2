"""One TLS trust setting for every HTTPS client of the process.

Where the trust comes from, first match wins:

1. an endpoint's own override (``S3Credentials.ca_bundle`` / ``verify_tls``);
2. the ``tls`` setting (``--ca-bundle`` / ``--no-verify-tls``, ``MODELFERRY_TLS__CA_BUNDLE`` /
   ``MODELFERRY_TLS__VERIFY``);
3. a client's own variable: ``AWS_CA_BUNDLE`` for S3-compatible stores and AWS KMS, ``VAULT_CACERT``
   for Vault (an S3 CA then never hides the public Hub's roots);
4. the process-wide variables, in this order: ``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``, ``SSL_CERT_DIR``;
5. the cluster's CA ConfigMap (``MODELFERRY_TLS__CLUSTER_BUNDLE``, an optional mount), when it holds PEMs;
6. each library's default store.

A bundle may be a PEM file or a directory of PEM files (a mounted ConfigMap with several keys, e.g.
OpenShift AI's ``odh-trusted-ca-bundle``). Clients that only take a file path (botocore, requests)
get one combined file for a directory, written once under the temporary directory. Like
``AWS_CA_BUNDLE`` and ``REQUESTS_CA_BUNDLE``, a bundle replaces the default store.
"""

from __future__ import annotations

import functools
import hashlib
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelferry.errors import TLSVerificationError, UsageError
from modelferry.settings import TLSSettings

ENV_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
AWS_VARIABLES = ("AWS_CA_BUNDLE",)
TLS_HINT = (
    "Pass --ca-bundle FILE (a PEM file or a directory of them) or set MODELFERRY_TLS__CA_BUNDLE "
    "(AWS_CA_BUNDLE, REQUESTS_CA_BUNDLE and SSL_CERT_FILE work too) with the CA that signed the server's "
    "certificate; in a cluster, name a CA ConfigMap (see docs/tls.md). --no-verify-tls only for a test endpoint"
)
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
OP_ENABLE_KTLS = getattr(ssl, "OP_ENABLE_KTLS", 1 << 3)  # SSL_OP_ENABLE_KTLS, OpenSSL 3 (ssl.h)


@dataclass(frozen=True)
class TLSConfig:
    """The effective trust of one client: verify on/off and the CA bundle (file or directory)."""

    verify: bool = True
    ca: str | None = None
    origin: str = ""  # where ``ca``/``verify`` came from, for messages

    @property
    def cafile(self) -> str | None:
        """A single PEM file holding the bundle (a directory's files combined), None for the default store."""
        if not self.verify or self.ca is None:
            return None
        return combined_bundle(self.ca)

    def verify_arg(self) -> bool | str:
        """``verify=`` for requests, botocore and httpx: False, a bundle file, or True (their default store)."""
        if not self.verify:
            return False
        return self.cafile or True

    def ssl_context(self) -> ssl.SSLContext:
        """A client SSLContext with this trust (urllib3, httpx, aiohttp), shared: never change it."""
        return _context(self.verify, self.cafile)

    def bulk_context(self) -> ssl.SSLContext:
        """A new client SSLContext with this trust for bulk reads: kernel TLS asked for (see below).

        ``SSL_OP_ENABLE_KTLS`` (Python 3.11 has no name for the bit): OpenSSL moves a connection's
        record layer into the kernel where the kernel offers the ``tls`` ULP and supports the cipher
        and version, and silently stays in user space everywhere else. ``SSL_read`` returns
        plaintext either way. Only for contexts whose sockets are read, not ``sendfile``d to.
        """
        ctx = _new_context(self.verify, self.cafile)
        ctx.options |= OP_ENABLE_KTLS
        return ctx

    def describe(self) -> str:
        """Which CA was used, in words."""
        if not self.verify:
            return f"certificate verification off ({self.origin})"
        if self.ca is None:
            return "the default trust store (no CA bundle was given)"
        return f"the CA bundle {self.ca} (from {self.origin})"

    def failure(self, endpoint: str, detail: object, *, what: str | None = None) -> TLSVerificationError:
        """The permanent error for a failed handshake with ``endpoint``: names the CA and how to pass another."""
        return TLSVerificationError(
            f"TLS verification of {endpoint} failed using {self.describe()}: {failure_detail(detail)}",
            obj=what or endpoint,
            hint=TLS_HINT,
        )


def pin_requests_session(session: Any, tls: TLSConfig) -> None:
    """Make every request of a requests ``Session`` (or the oci SDK's vendored one) use ``tls``.

    ``Session.verify`` alone loses to ``REQUESTS_CA_BUNDLE`` in requests' environment merge, so the
    adapters get the value on each send as well.
    """
    verify = tls.verify_arg()
    session.verify = verify
    for adapter in {id(a): a for a in session.adapters.values()}.values():
        send = adapter.send

        def pinned(request: Any, *args: Any, _send: Any = send, **kwargs: Any) -> Any:
            kwargs["verify"] = verify
            return _send(request, *args, **kwargs)

        adapter.send = pinned


def resolve_tls(
    settings: TLSSettings | None = None,
    *,
    ca_bundle: str | None = None,
    verify: bool = True,
    own_variables: tuple[str, ...] = (),
    environ: dict[str, str] | os._Environ[str] | None = None,
) -> TLSConfig:
    """The effective trust: an endpoint override (``ca_bundle``/``verify``), the setting, then the variables."""
    env = os.environ if environ is None else environ
    settings = settings or settings_from_env(env)
    if not verify:
        return TLSConfig(verify=False, origin="this endpoint's verify_tls setting")
    if not settings.verify:
        return TLSConfig(verify=False, origin="--no-verify-tls / MODELFERRY_TLS__VERIFY")
    if ca_bundle:
        return _checked(ca_bundle, "this endpoint's ca_bundle setting")
    if settings.ca_bundle:
        return _checked(settings.ca_bundle, "--ca-bundle / MODELFERRY_TLS__CA_BUNDLE")
    for name in (*own_variables, *ENV_VARIABLES):
        value = (env.get(name) or "").strip()
        if value:
            return _checked(value, name)
    if settings.cluster_bundle and _pem_files(settings.cluster_bundle):
        return TLSConfig(
            ca=settings.cluster_bundle, origin="the cluster's CA ConfigMap, MODELFERRY_TLS__CLUSTER_BUNDLE"
        )
    return TLSConfig()


def settings_from_env(environ: dict[str, str] | os._Environ[str] | None = None) -> TLSSettings:
    """``MODELFERRY_TLS__CA_BUNDLE`` / ``MODELFERRY_TLS__VERIFY`` for components without a settings tree."""
    env = os.environ if environ is None else environ
    values = {
        key: env[name]
        for key, name in (
            ("ca_bundle", "MODELFERRY_TLS__CA_BUNDLE"),
            ("verify", "MODELFERRY_TLS__VERIFY"),
            ("cluster_bundle", "MODELFERRY_TLS__CLUSTER_BUNDLE"),
        )
        if env.get(name)
    }
    try:
        return TLSSettings.model_validate(values)
    except ValueError as exc:
        raise UsageError(f"invalid MODELFERRY_TLS__* setting: {exc}", hint="VERIFY takes true or false") from exc


def _checked(path: str, origin: str) -> TLSConfig:
    if not os.path.exists(path):
        raise UsageError(
            f"the CA bundle {path} (from {origin}) does not exist",
            obj=path,
            hint="Point it at a PEM file or a directory of PEM files that is mounted in this container",
        )
    return TLSConfig(verify=True, ca=path, origin=origin)


def combined_bundle(path: str) -> str:
    """``path`` itself for a file; for a directory, one file with every PEM certificate in it."""
    if not os.path.isdir(path):
        return path
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in _pem_files(path))
    return _combine(path, stamp)


def _pem_files(directory: str) -> list[Path]:
    """Files of ``directory`` (not the ``..data`` entries of a mounted ConfigMap) that hold a certificate."""
    try:
        entries = sorted(Path(directory).iterdir())
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.name.startswith("..") or not entry.is_file():
            continue
        try:
            with entry.open("rb") as fh:
                if _PEM_BEGIN in fh.read(1 << 20):
                    found.append(entry)
        except OSError:
            continue
    return found


@functools.lru_cache(maxsize=16)
def _combine(path: str, stamp: tuple[tuple[str, int], ...]) -> str:
    parts: list[bytes] = []
    for name, _ in stamp:
        try:
            data = (Path(path) / name).read_bytes()
        except OSError:
            continue
        if _PEM_BEGIN in data:
            parts.append(data.rstrip(b"\n") + b"\n")
    if not parts:
        raise UsageError(
            f"the CA directory {path} holds no PEM certificate",
            obj=path,
            hint="Mount a ConfigMap whose keys are PEM bundles (e.g. ca-bundle.crt)",
        )
    blob = b"".join(parts)
    out = Path(tempfile.gettempdir()) / f"modelferry-ca-{hashlib.sha256(blob).hexdigest()[:16]}.pem"
    if not out.exists():
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, out)
    return str(out)


@functools.lru_cache(maxsize=16)
def _context(verify: bool, cafile: str | None) -> ssl.SSLContext:
    return _new_context(verify, cafile)


def _new_context(verify: bool, cafile: str | None) -> ssl.SSLContext:
    if not verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if cafile is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(
            f"cannot load the CA bundle {cafile}: {exc}", obj=cafile, hint="It must hold PEM certificates"
        ) from exc


_PERMANENT_MARKERS = (
    "CERTIFICATE_VERIFY_FAILED",
    "certificate verify failed",
    "WRONG_VERSION_NUMBER",  # TLS spoken to a plain-HTTP port
    "TLSV1_ALERT_UNKNOWN_CA",
    "BAD_CERTIFICATE",
    "Hostname mismatch",
)


def failure_detail(detail: object) -> str:
    """The OpenSSL reason of a failure (no URL, so no presigned query string reaches a message)."""
    todo: list[object] = [detail]
    seen: set[int] = set()
    while todo:
        current = todo.pop(0)
        if id(current) in seen or not isinstance(current, BaseException):
            continue
        seen.add(id(current))
        message = getattr(current, "verify_message", None)
        if isinstance(current, ssl.SSLCertVerificationError) and isinstance(message, str):
            return f"certificate verify failed: {message}"
        if isinstance(current, ssl.SSLError | ssl.CertificateError):
            return str(getattr(current, "reason", None) or current)
        todo.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        todo.extend(e for e in (current.__cause__, current.__context__, getattr(current, "reason", None)) if e)
    text = str(detail)
    return text.split("?", 1)[0][:300]


def is_tls_failure(exc: BaseException) -> bool:
    """True for a certificate or protocol mismatch anywhere in ``exc``'s chain (retrying cannot help).

    A connection dropped during the handshake (EOF, reset) is not one: it stays retryable.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError | ssl.CertificateError):
            return True
        text = str(current)
        if any(marker in text for marker in _PERMANENT_MARKERS):
            return True
        todo.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        reason = getattr(current, "reason", None)  # urllib3's MaxRetryError
        if isinstance(reason, BaseException):
            todo.append(reason)
    return False
