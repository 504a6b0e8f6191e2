"""Fast ranged reads from S3: presigned GET URLs fetched through ``RangedHTTPClient``.

boto3's StreamingBody costs a lot of CPU per byte; a presigned URL lets the urllib3
socket fast path serve every range of an object (Range is not a signed header, so one
URL per key serves all ranges). URLs are cached per key (a bounded number) and refreshed well before expiry; unsigned
(anonymous) URLs are built from the bucket's base URL without botocore.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast
from urllib.parse import quote

from botocore import UNSIGNED

from modelferry.errors import AccessDeniedError, NotFoundError, PermanentError
from modelferry.storage.base import FileSink, InPlace
from modelferry.storage.http import RangedHTTPClient

PRESIGN_SECONDS = 3600
REFRESH_MARGIN = 0.2  # refresh when less than this fraction of the lifetime is left
URL_CACHE = 4096  # signed URLs kept (a million-file tree would otherwise keep a million)
PROBE_KEY = "modelferry-probe-0c8f2a"  # a key with nothing to encode, to learn an unsigned URL's shape


class PresignedReader:
    """Ranged GETs of one bucket's objects via cached presigned URLs (thread-safe)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        http: RangedHTTPClient,
        *,
        expires_in: int = PRESIGN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.http = http
        self.expires_in = expires_in
        self.clock = clock
        self.presigned = 0  # URLs generated (tests, debugging)
        self._urls: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._unsigned = getattr(getattr(client, "meta", None), "config", None) is not None and (
            client.meta.config.signature_version is UNSIGNED
        )
        self._template: tuple[str, str] | None = None

    def url(self, key: str) -> str:
        """A presigned GET URL for ``key`` with enough lifetime left.

        Unsigned (anonymous) clients need no signature: the URL is the bucket's base (learnt from
        botocore once) plus the key, encoded as botocore encodes it, about 1/100 of a presign's CPU.
        Signed URLs are cached per key, for the most recent :data:`URL_CACHE` keys only.
        """
        if self._unsigned:
            return self._unsigned_url(key)
        now = self.clock()
        with self._lock:
            cached = self._urls.get(key)
            if cached is not None and cached[1] > now:
                self._urls.move_to_end(key)
                return cached[0]
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.expires_in
        )
        refresh_at = now + self.expires_in * (1 - REFRESH_MARGIN)
        with self._lock:
            self._urls[key] = (url, refresh_at)
            self._urls.move_to_end(key)
            while len(self._urls) > URL_CACHE:
                self._urls.popitem(last=False)
            self.presigned += 1
        return url

    def _unsigned_url(self, key: str) -> str:
        if self._template is None:
            probe: str = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": PROBE_KEY}, ExpiresIn=self.expires_in
            )
            head, found, tail = probe.partition(PROBE_KEY)
            if not found:  # an endpoint botocore spells in a way we do not expect: presign every key
                self._unsigned = False
                return self.url(key)
            self._template = (head, tail)
        head, tail = self._template
        return head + quote(key, safe="/~") + tail

    def forget(self, key: str) -> None:
        """Drop the cached URL of ``key`` (after an expired-signature answer)."""
        with self._lock:
            self._urls.pop(key, None)

    def read(self, key: str, start: int, length: int, *, etag: str | None, what: str) -> Iterator[bytes]:
        """Stream ``[start, start + length)`` of ``key``; errors name ``what`` and say how to fix them."""
        return cast(Iterator[bytes], self.read_into(key, start, length, None, etag=etag, what=what))

    def read_into(
        self, key: str, start: int, length: int, sink: FileSink | None, *, etag: str | None, what: str
    ) -> Iterator[bytes | InPlace]:
        """:meth:`read`, splicing a plain-HTTP body into ``sink`` when one is given."""
        headers = {"If-Match": f'"{etag}"'} if etag else {}
        for attempt in (0, 1):
            produced = False
            try:
                chunks = (
                    self.http.get_range_into(self.url(key), start, length, sink, headers=headers, what=what)
                    if sink is not None
                    else self.http.get_range(self.url(key), start, length, headers=headers, what=what)
                )
                for chunk in chunks:
                    produced = True
                    yield chunk
                return
            except AccessDeniedError as exc:
                # An expired URL answers 403: presign once more before calling it a permission problem.
                self.forget(key)
                if attempt == 0 and not produced:
                    continue
                raise AccessDeniedError(
                    f"{what}: access denied (403)",
                    obj=what,
                    hint="Check the S3 access key and secret (or profile) and that they grant s3:GetObject",
                ) from exc
            except NotFoundError as exc:
                raise NotFoundError(
                    f"{what} does not exist (404) in bucket {self.bucket}",
                    obj=what,
                    hint="Check the bucket and prefix; the object may have been deleted during the copy",
                ) from exc
            except PermanentError as exc:
                if "412" in str(exc):
                    raise PermanentError(
                        f"{what}: the object changed during the copy (412 precondition failed)",
                        obj=what,
                        hint="Run the sync again once the source stops changing",
                    ) from exc
                raise
