"""Fast uploads to S3: part and object PUTs on presigned URLs, through the shared urllib3 pool.

botocore spends CPU on every request (event hooks, serialization, parsing the answer) and, over
plain HTTP, a sha256 pass over every body to sign the payload. A presigned URL signs the headers we
send (a checksum header, the sha256 metadata) and leaves the payload unsigned, as botocore itself
does over HTTPS: every body is still verified (by the store against its Content-MD5 or CRC32, or by
comparing the ETag it answers, see :mod:`.s3_upload`), so nothing corrupted is completed either way. The body goes out as it is (no copy). Error
answers are read from the S3 error document and translated exactly like botocore's; a retryable
failure is tried again here (as botocore's own retries would), a few times with backoff.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from modelferry.retry import retry_call
from modelferry.storage.http import RangedHTTPClient
from modelferry.storage.s3_errors import translate_client_error

PRESIGN_SECONDS = 900  # each URL serves one request, sent at once
ATTEMPTS = 2  # like the boto3 client's total_max_attempts (see s3_config.client_config)


def error_document(data: bytes) -> dict[str, str]:
    """Code and Message of an S3 error answer (empty when the body is not one); no XML parser, no entities."""
    text = data[:16384].decode("utf-8", "replace")
    out: dict[str, str] = {}
    for tag in ("Code", "Message"):
        match = re.search(rf"<{tag}>([^<]{{1,1024}})</{tag}>", text)
        if match:
            out[tag] = html.unescape(match[1])
    return out


class PresignedWriter:
    """PutObject and UploadPart of one bucket on presigned URLs (thread-safe)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        http: RangedHTTPClient,
        *,
        endpoint: str,
        backoff: tuple[float, float] = (0.5, 5.0),
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.http = http
        self.endpoint = endpoint
        self.backoff = backoff
        self.requests = 0  # PUTs sent (tests, statistics)

    def put(
        self,
        operation: str,
        params: dict[str, Any],
        body: bytes | bytearray | memoryview,
        headers: Mapping[str, str],
        *,
        what: str,
    ) -> Mapping[str, str]:
        """Send ``operation`` (``put_object`` / ``upload_part``) with ``body``; the answer's headers.

        ``params`` are the operation's parameters besides the bucket; every one that becomes a
        header (Content-MD5, metadata) must also be in ``headers``, so the signature covers it.
        """

        def once() -> Mapping[str, str]:
            url: str = self.client.generate_presigned_url(
                operation, Params={"Bucket": self.bucket, **params}, ExpiresIn=PRESIGN_SECONDS
            )
            self.requests += 1
            resp = self.http.put(url, body, headers, what)
            if 200 <= resp.status < 300:
                return resp.headers
            error = error_document(resp.data or b"")
            response: Any = {
                "Error": error,
                "ResponseMetadata": {
                    "HTTPStatusCode": resp.status,
                    "HTTPHeaders": {k.lower(): v for k, v in resp.headers.items()},
                },
            }
            raise translate_client_error(
                ClientError(response, operation), bucket=self.bucket, what=what, endpoint=self.endpoint
            )

        return retry_call(once, retries=ATTEMPTS - 1, base=self.backoff[0], cap=self.backoff[1], what=what)
