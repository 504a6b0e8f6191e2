"""Hugging Face Hub repositories (models and datasets) as a read-only source.

Metadata comes through huggingface_hub's public API: the revision (branch, tag
or commit) is resolved once to a commit sha and everything after uses that sha,
so a branch that moves mid-copy cannot mix two versions. The recursive tree
gives sizes, the LFS sha256 of large files and the git blob id of small ones,
which the engine checks while the bytes arrive. Bytes come through our own
ranged HTTP engine (:mod:`modelferry.storage.http`) from
``{endpoint}/{repo}/resolve/{sha}/{path}``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import httpx2
from huggingface_hub import HfApi, get_token, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile

from modelferry import __version__
from modelferry.errors import (
    AccessDeniedError,
    ModelferryError,
    NotFoundError,
    PermanentError,
    RetryableError,
    ThrottledError,
    UsageError,
)
from modelferry.logs import register_secret
from modelferry.retry import retry_call
from modelferry.settings import HFCredentials, TLSSettings, TransferSettings
from modelferry.storage.base import MANIFEST_NAME, FileSink, InPlace, ObjectInfo, Store, StoreFeatures
from modelferry.storage.http import RangedHTTPClient
from modelferry.storage.http_status import parse_retry_after
from modelferry.storage.hub_tls import use_hub_tls
from modelferry.tls import is_tls_failure, resolve_tls
from modelferry.uri import StorageURI

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
T = TypeVar("T")
_END = object()  # the tree listing is exhausted
PROBE_NAME = "modelferry-probe-5e1d7c"  # a file name with nothing to quote, to learn the resolve URL's shape
LIST_CACHE = 10_000  # listings up to this many files are kept for a second use


def resolve_endpoint(creds: HFCredentials, environ: dict[str, str] | None = None) -> str:
    """creds.endpoint, else HF_ENDPOINT (read now, not at import), else the public Hub."""
    env = os.environ if environ is None else environ
    return (creds.endpoint or env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def resolve_token(creds: HFCredentials, environ: dict[str, str] | None = None) -> str | None:
    """creds.token, else the token file (a mounted Secret), else HF_TOKEN, else a stored login."""
    env = os.environ if environ is None else environ
    if creds.token is not None and creds.token.get_secret_value():
        token: str | None = creds.token.get_secret_value().strip()
    elif creds.token_file:
        try:
            token = Path(creds.token_file).read_text().strip()
        except OSError as exc:
            raise UsageError(
                f"cannot read the Hugging Face token file {creds.token_file}: {exc.strerror}",
                obj=creds.token_file,
                hint="Check that the Secret is mounted at that path and readable",
            ) from exc
        if not token:
            raise UsageError(f"the Hugging Face token file {creds.token_file} is empty", obj=creds.token_file)
    else:
        token = (env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN") or "").strip() or None
        if token is None and environ is None:
            token = get_token()  # a token stored by `hf auth login`, as huggingface_hub itself would use
    register_secret(token)
    return token


def translate_hub_error(exc: Exception, repo: str, revision: str | None, *, has_token: bool) -> ModelferryError:
    """Map a huggingface_hub / httpx2 exception to the modelferry hierarchy."""
    rev = revision or "main"
    if isinstance(exc, GatedRepoError):
        return AccessDeniedError(
            f"Hugging Face repo {repo} is gated",
            obj=repo,
            hint="Accept the model's licence on its Hub page with your account, then set HF_TOKEN "
            "(or --hf-token / --hf-token-file) to a token of that account",
        )
    if isinstance(exc, RevisionNotFoundError):
        return NotFoundError(
            f"revision {rev!r} does not exist in Hugging Face repo {repo}",
            obj=f"{repo}@{rev}",
            hint="Check the branch, tag or commit sha",
        )
    if isinstance(exc, RepositoryNotFoundError):
        hint = (
            "Check the repo id (and hf://datasets/ for datasets); a private repo needs a token with access"
            if has_token
            else "Check the repo id (and hf://datasets/ for datasets); if it is private or gated set HF_TOKEN "
            "(or --hf-token / --hf-token-file)"
        )
        return NotFoundError(f"Hugging Face repo {repo} not found", obj=repo, hint=hint)
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            return AccessDeniedError(
                f"access to Hugging Face repo {repo} denied ({status})",
                obj=repo,
                hint="Set a valid token with read access (HF_TOKEN, --hf-token or --hf-token-file)",
            )
        if status in (429, 503):
            retry_after = parse_retry_after(exc.response.headers.get("Retry-After")) if exc.response else None
            return ThrottledError(
                f"the Hub throttled a request for {repo} ({status})", obj=repo, retry_after=retry_after
            )
        if status >= 500:
            return RetryableError(f"the Hub answered {status} for {repo}", obj=repo)
        return PermanentError(f"the Hub refused a request for {repo}: {status}", obj=repo)
    if isinstance(exc, httpx2.TransportError):
        return RetryableError(f"cannot reach the Hub for {repo}: {exc}", obj=repo)
    return PermanentError(f"unexpected error talking to the Hub about {repo}: {exc}", obj=repo)


class HFStore(Store):
    """A Hub model or dataset repo at one pinned commit (source only)."""

    features = StoreFeatures()

    def __init__(
        self, uri: StorageURI, creds: HFCredentials, transfer: TransferSettings, *, tls: TLSSettings | None = None
    ) -> None:
        self.uri = uri
        self.tls = resolve_tls(tls)
        use_hub_tls(self.tls)  # huggingface_hub's client is process-wide
        self.repo_id = uri.repo_id
        self.repo_type = uri.repo_type
        self.requested_revision = uri.revision or None
        self.endpoint = resolve_endpoint(creds)
        self.token = resolve_token(creds)
        self.transfer = transfer
        # token=False stops huggingface_hub from falling back to a token we deliberately did not choose.
        self.api = HfApi(
            endpoint=self.endpoint,
            token=self.token or False,
            library_name="modelferry",
            library_version=__version__,
        )
        self.http = RangedHTTPClient(
            connect_timeout=transfer.connect_timeout,
            stall_timeout=transfer.stall_timeout,
            pool_size=transfer.concurrency,
            user_agent=f"modelferry/{__version__}",
            tls=self.tls,
            speed=(transfer.speed_limit, transfer.speed_time),
        )
        self._sha: str | None = None
        self._files: list[ObjectInfo] | None = None
        self._listed = False
        self._url_template: tuple[str, str] | None = None
        self._described: tuple[str | None, str] | None = None
        self._manifest: ObjectInfo | None = None

    # -- metadata ----------------------------------------------------------------

    @property
    def revision(self) -> str | None:
        """The commit sha the requested revision resolved to (None before :meth:`resolve`)."""
        return self._sha

    def identity(self) -> str:
        return f"hf:{self.endpoint}/{self.repo_type}/{self.repo_id}"

    def describe(self, path: str = "") -> str:
        revision = self._sha or self.uri.revision
        if self._described is None or self._described[0] != revision:  # once per revision, not per part
            self._described = (revision, str(self.uri.with_revision(revision)))
        base = self._described[1]
        return f"{base}/{path}" if path else base

    def _call(self, fn: Callable[[], T], what: str) -> T:
        def once() -> T:
            try:
                return fn()
            except (HfHubHTTPError, httpx2.HTTPError) as exc:
                if is_tls_failure(exc):
                    raise self.tls.failure(self.endpoint, exc, what=str(self.uri)) from exc
                raise translate_hub_error(
                    exc, self.repo_id, self.requested_revision, has_token=bool(self.token)
                ) from exc

        return retry_call(
            once,
            retries=self.transfer.retries,
            base=self.transfer.backoff_base,
            cap=self.transfer.backoff_max,
            what=what,
        )

    def resolve(self) -> None:
        """Pin the requested revision to a commit sha, once."""
        if self._sha is not None:
            return
        info = self._call(
            lambda: self.api.repo_info(self.repo_id, revision=self.requested_revision, repo_type=self.repo_type),
            f"resolving {self.uri}",
        )
        if not info.sha:
            raise PermanentError(f"the Hub gave no commit sha for {self.uri}", obj=str(self.uri))
        self._sha = info.sha
        if self.requested_revision and self.requested_revision != info.sha:
            log.info("pinned %s to commit %s", self.uri, info.sha)

    def list(self) -> Iterator[ObjectInfo]:
        """Every file of the repo at the pinned commit, as the tree's pages arrive.

        A listing of up to :data:`LIST_CACHE` files is kept (the commit never changes); a larger
        one streams every time. A page that fails is retried: the tree is listed again from the
        start and the entries already handed out are skipped.
        """
        if self._files is not None:
            yield from self._files
            return
        self.resolve()
        sha = self._sha
        entries: Iterator[object] | None = None
        taken = 0

        def step() -> object:
            nonlocal entries
            try:
                if entries is None:
                    entries = iter(
                        self.api.list_repo_tree(
                            self.repo_id, recursive=True, expand=False, revision=sha, repo_type=self.repo_type
                        )
                    )
                    for _ in range(taken):
                        next(entries, None)
                return next(entries, _END)
            except BaseException:
                entries = None
                raise

        cache: list[ObjectInfo] | None = []
        manifest: ObjectInfo | None = None
        while (entry := self._call(step, f"listing {self.uri}")) is not _END:
            taken += 1
            if not isinstance(entry, RepoFile):
                continue
            info = self._info(entry)
            if info.path == MANIFEST_NAME:
                manifest = info
            if cache is not None:
                cache.append(info)
                if len(cache) > LIST_CACHE:
                    cache = None
            yield info
        self._files = cache
        self._manifest = manifest
        self._listed = True

    def _info(self, entry: RepoFile) -> ObjectInfo:
        if entry.lfs is not None:
            return ObjectInfo(
                path=entry.path,
                size=entry.lfs.size,
                sha256=entry.lfs.sha256.lower(),
                etag=entry.lfs.sha256.lower(),
                version=self._sha,
            )
        # Small files live in git: the blob oid is sha1("blob <size>\0" + bytes), which the engine checks.
        return ObjectInfo(
            path=entry.path, size=entry.size, git_sha1=entry.blob_id, etag=entry.blob_id, version=self._sha
        )

    def stat(self, path: str) -> ObjectInfo | None:
        if path == MANIFEST_NAME and self._listed:
            return self._manifest  # seen (or not) by the last listing: no second pass over a large tree
        for info in self.list():
            if info.path == path:
                return info
        return None

    # -- bytes -------------------------------------------------------------------

    def file_url(self, path: str) -> str:
        """The resolve URL of ``path`` at the pinned commit.

        ``hf_hub_url`` is asked once, for a probe name; every path then fills the same template,
        quoted as ``hf_hub_url`` quotes it (a small file's download costs less CPU).
        """
        self.resolve()
        if self._url_template is None:
            probe = hf_hub_url(
                self.repo_id, PROBE_NAME, repo_type=self.repo_type, revision=self._sha, endpoint=self.endpoint
            )
            head, found, tail = probe.partition(PROBE_NAME)
            if not found:
                return hf_hub_url(
                    self.repo_id, path, repo_type=self.repo_type, revision=self._sha, endpoint=self.endpoint
                )
            self._url_template = (head, tail)
        head, tail = self._url_template
        return head + quote(path) + tail

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return self.http.get_range(self.file_url(path), start, length, headers=headers, what=self.describe(path))

    def read_into(
        self, path: str, start: int, length: int, sink: FileSink, *, info: ObjectInfo | None = None
    ) -> Iterable[bytes | InPlace]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return self.http.get_range_into(
            self.file_url(path), start, length, sink, headers=headers, what=self.describe(path)
        )

    def interrupt(self) -> None:
        """Wake downloads blocked on a silent server (SIGTERM drain)."""
        self.http.interrupt()

    def close(self) -> None:
        self.http.close()
