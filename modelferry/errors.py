"""The one error hierarchy of modelferry.

Every failure is either *retryable* (the same command may succeed later: a
network blip, a throttled store, a lease held elsewhere) or *permanent* (it will
fail again until a human changes something: a missing bucket, a denied key, a
corrupt object). Usage and configuration mistakes are permanent too but get their
own exit code so scripts and Job pod-failure policies can tell them apart.

Third-party exceptions are translated into these at the storage/KMS/Kubernetes
boundary; nothing above that boundary catches botocore or httpx errors.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RETRYABLE = 1
EXIT_USAGE = 2
EXIT_PERMANENT = 3


class ModelferryError(Exception):
    """Base class. ``hint`` says how to fix it; ``obj`` names what failed."""

    exit_code: int = EXIT_PERMANENT
    reason: str = "Failed"

    def __init__(self, message: str, *, obj: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.obj = obj
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.obj and self.obj not in text:
            text = f"{text} [{self.obj}]"
        if self.hint:
            text = f"{text}. {self.hint}"
        return text

    @property
    def retryable(self) -> bool:
        return self.exit_code == EXIT_RETRYABLE


class RetryableError(ModelferryError):
    """Transient: try again later (network, throttling, 5xx, timeouts)."""

    exit_code = EXIT_RETRYABLE
    reason = "Transient"

    def __init__(
        self,
        message: str,
        *,
        obj: str | None = None,
        hint: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, obj=obj, hint=hint)
        self.retry_after = retry_after


class ThrottledError(RetryableError):
    """The server asked us to slow down (429/503/SlowDown)."""

    reason = "Throttled"


class StalledError(RetryableError):
    """A stream delivered no bytes for longer than the stall timeout."""

    reason = "Stalled"


class TooSlowError(RetryableError):
    """Bytes arrive, but slower than the low-speed limit (``--speed-limit`` for ``--speed-time``)."""

    reason = "TooSlow"


class PermanentError(ModelferryError):
    """Will fail again until something changes."""

    exit_code = EXIT_PERMANENT


class UsageError(ModelferryError):
    """Bad command line, bad URI, bad configuration."""

    exit_code = EXIT_USAGE
    reason = "InvalidConfiguration"


class InvalidURIError(UsageError):
    reason = "InvalidURI"


class NotFoundError(PermanentError):
    """Repository, revision, bucket or object does not exist."""

    reason = "SourceNotFound"


class AccessDeniedError(PermanentError):
    """Credentials missing, wrong, or without permission (also gated repos)."""

    reason = "AccessDenied"


class IntegrityError(PermanentError):
    """Bytes did not match the expected checksum (after refetching)."""

    reason = "IntegrityCheckFailed"


class UnsafePathError(PermanentError):
    """A remote name would escape the target (``..``, absolute paths)."""

    reason = "UnsafePath"


class PathInUseError(PermanentError):
    """A directory belongs to another model (the node agent's marker there names it)."""

    reason = "PathInUse"


class SourceNotAllowedError(UsageError):
    """A tenant named a source the cluster side may not read (a local path in our pod, an unmounted claim)."""

    reason = "SourceNotAllowed"


class SizeLimitError(PermanentError):
    """The plan exceeds the configured size limit."""

    reason = "SizeLimitExceeded"


class TLSVerificationError(PermanentError):
    """A server's certificate could not be verified (or the handshake failed): retrying cannot help."""

    reason = "TLSVerificationFailed"


class InsufficientSpaceError(PermanentError):
    """The target filesystem cannot hold the plan (or filled up mid-run)."""

    reason = "InsufficientSpace"


def exit_code_for(exc: BaseException) -> int:
    """Exit code for any exception: ours carry one; anything else is a bug (3)."""
    if isinstance(exc, ModelferryError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return EXIT_PERMANENT


class InvalidSpecError(PermanentError):
    """A custom resource's spec that does not have the shape its CRD declares (fix the object)."""

    reason = "InvalidSpec"
