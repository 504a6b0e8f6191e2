"""Oracle OCI Object Storage (``oci://n/{namespace}/b/{bucket}/o/{prefix}``) through the ``oci`` SDK.

The SDK is an optional extra (``modelferry[oci]``) and is imported only here and
in :mod:`modelferry.storage.oracle_client` (authentication, error translation). Bytes stream both ways:
ranged GETs for reads and multipart uploads (one ``upload_part`` per engine
part, each with its Content-MD5) for writes, so bucket-to-bucket copies across
regions and tenancies never touch a local disk.

Checksums: a single-part object carries ``Content-MD5`` (base64) and becomes
``ObjectInfo.md5``; a multipart object carries ``opc-multipart-md5``
(``base64-N``) and becomes ``ObjectInfo.etag = "<hex>-N"`` plus the part size we
recorded in ``opc-meta-modelferry-part-size`` when we wrote it, so the engine
can recompute it from per-part MD5s.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import oci  # the [oci] extra; storage/__init__.py turns its absence into a UsageError

from modelferry.checksums import b64_to_hex
from modelferry.errors import RetryableError
from modelferry.settings import OCICredentials, TLSSettings, TransferSettings
from modelferry.storage.base import PARTIAL_DIR, ObjectInfo, Store, StoreFeatures, Upload
from modelferry.storage.http import read_arrived
from modelferry.storage.object_upload import ObjectUpload
from modelferry.storage.oracle_client import call, make_client, translate
from modelferry.storage.upload_journal import drop_records, record_stems, stale_record
from modelferry.tls import resolve_tls
from modelferry.uri import StorageURI, relative_key, under_prefix

log = logging.getLogger(__name__)

T = TypeVar("T")
READ_CHUNK = 1 << 20
PAGE_SIZE = 1000
PART_SIZE_META = "modelferry-part-size"  # stored as opc-meta-modelferry-part-size
MIN_PART = 10 << 20  # Oracle's minimum part size (except the last part)
MAX_PARTS = 10_000
LIST_FIELDS = "name,size,md5,etag,timeCreated"


def multipart_hex(value: str | None) -> str | None:
    """``opc-multipart-md5`` "base64-N" to "hex-N" (None when it is not one)."""
    if not value or "-" not in value:
        return None
    digest, _, count = value.rpartition("-")
    hexed = b64_to_hex(digest)
    return f"{hexed}-{count}" if hexed and count.isdigit() else None


class OracleUpload(ObjectUpload):
    """``put_object`` for a one-part file, a multipart upload otherwise (resumable); visible only on complete."""

    def __init__(self, store: OracleStore, path: str, size: int, part_size: int, fingerprint: str = "") -> None:
        super().__init__(store, path, size, part_size, fingerprint)
        self.store = store
        self.key = store.uri.key(path)
        self.begin()

    def _create(self) -> str:
        store = self.store
        details = oci.object_storage.models.CreateMultipartUploadDetails(
            object=self.key, metadata={f"opc-meta-{PART_SIZE_META}": str(self.part_size)}
        )
        response = store.call(
            lambda: store.client.create_multipart_upload(store.namespace, store.bucket, details), self.describe
        )
        return str(response.data.upload_id)

    def _send_part(self, index: int, data: bytes | bytearray, md5: bytes | None) -> str:
        md5 = md5 or hashlib.md5(data).digest()  # noqa: S324 - Oracle verifies Content-MD5 only (always given)
        body = bytes(data)  # the oci SDK sends bytes bodies
        store, upload_id = self.store, self.upload_id
        response = store.call(
            lambda: store.client.upload_part(
                store.namespace,
                store.bucket,
                self.key,
                upload_id,
                index + 1,
                body,
                content_md5=base64.b64encode(md5).decode(),
            ),
            f"{self.describe} part {index + 1}",
        )
        return str(response.headers["etag"])

    def _stored_parts(self, upload_id: str) -> dict[int, tuple[str, int]]:
        store = self.store
        parts: dict[int, tuple[str, int]] = {}
        page: str | None = None
        while True:
            response = store.call(
                lambda p=page: store.client.list_multipart_upload_parts(  # type: ignore[misc]
                    store.namespace, store.bucket, self.key, upload_id, limit=PAGE_SIZE, page=p
                ),
                f"parts of {self.describe}",
            )
            for part in response.data or []:
                parts[int(part.part_number)] = (str(part.etag), int(part.size or 0))
            page = response.headers.get("opc-next-page")
            if not page:
                return parts

    def _commit(self, etags: list[tuple[int, str]]) -> str | None:
        store, upload_id = self.store, self.upload_id
        details = oci.object_storage.models.CommitMultipartUploadDetails(
            parts_to_commit=[
                oci.object_storage.models.CommitMultipartUploadPartDetails(part_num=n, etag=e) for n, e in etags
            ]
        )
        response = store.call(
            lambda: store.client.commit_multipart_upload(store.namespace, store.bucket, self.key, upload_id, details),
            self.describe,
        )
        return multipart_hex(response.headers.get("opc-multipart-md5")) or response.headers.get("etag")

    def _put_single(self, data: bytes | bytearray) -> str | None:
        store, body = self.store, bytes(data)
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324 - protocol checksum
        response = store.call(
            lambda: store.client.put_object(store.namespace, store.bucket, self.key, body, content_md5=md5),
            self.describe,
        )
        etag: str | None = response.headers.get("etag")
        return etag

    def _abort_id(self, upload_id: str) -> None:
        self.store.abort_upload(self.path, upload_id)


class OracleStore(Store):
    """One ``oci://`` prefix, as a source or a target."""

    features = StoreFeatures(min_part_size=MIN_PART, max_parts=MAX_PARTS)

    def __init__(
        self,
        uri: StorageURI,
        creds: OCICredentials,
        transfer: TransferSettings,
        *,
        client: Any = None,
        tls: TLSSettings | None = None,
    ) -> None:
        self.uri = uri
        self.tls = resolve_tls(tls)
        self.namespace = uri.namespace
        self.bucket = uri.bucket
        self.creds = creds
        self.endpoint = creds.endpoint or ""
        if client is None:
            client, facts = make_client(creds, transfer, self.tls)
        else:
            facts = {"region": creds.region or "", "tenancy": ""}
        self.client = client
        self.region = str(facts.get("region") or "")
        self.tenancy = str(facts.get("tenancy") or "")
        if not self.endpoint:
            self.endpoint = str(getattr(getattr(client, "base_client", None), "endpoint", "") or "")

    def call(self, fn: Callable[[], T], what: str) -> T:
        return call(fn, what, self.tls)

    def identity(self) -> str:
        return f"oci:{self.endpoint}|{self.region}|{self.namespace}|{self.tenancy}"

    def resolve(self) -> None:
        """Fail early, naming the bucket, when it does not exist or is not ours to read."""
        self.call(lambda: self.client.head_bucket(self.namespace, self.bucket), f"bucket {self.bucket_uri}")

    @property
    def bucket_uri(self) -> str:
        return f"oci://n/{self.namespace}/b/{self.bucket}"

    def _info(self, rel: str, size: int, md5_field: str | None, etag: str | None) -> ObjectInfo:
        multipart = multipart_hex(md5_field)
        if multipart is None:
            return ObjectInfo(path=rel, size=size, md5=b64_to_hex(md5_field) if md5_field else None, etag=etag)
        return ObjectInfo(path=rel, size=size, etag=multipart, part_size=self._part_size(rel))

    def _part_size(self, rel: str) -> int | None:
        """The part size we recorded when writing a multipart object (one HEAD, large objects only)."""
        headers = self._head(rel)
        value = (headers or {}).get(f"opc-meta-{PART_SIZE_META}")
        return int(value) if value and value.isdigit() else None

    def _head(self, rel: str) -> dict[str, str] | None:
        key = self.uri.key(rel)
        try:
            response = self.client.head_object(self.namespace, self.bucket, key)
        except oci.exceptions.ServiceError as exc:
            if exc.status == 404:
                return None
            raise translate(exc, self.describe(rel), self.tls) from exc
        except Exception as exc:
            raise translate(exc, self.describe(rel), self.tls) from exc
        return {k.lower(): v for k, v in response.headers.items()}

    def list(self) -> Iterator[ObjectInfo]:
        prefix = self.uri.prefix
        list_prefix = f"{prefix}/" if prefix else None
        start: str | None = None
        while True:
            kwargs: dict[str, Any] = {"fields": LIST_FIELDS, "limit": PAGE_SIZE}
            if list_prefix:
                kwargs["prefix"] = list_prefix
            if start:
                kwargs["start"] = start
            response = self.call(
                lambda kw=kwargs: self.client.list_objects(self.namespace, self.bucket, **kw),  # type: ignore[misc]
                f"listing {self.describe()}",
            )
            for obj in response.data.objects or []:
                name = obj.name
                if not under_prefix(name, prefix) or name.endswith("/"):
                    continue  # zero-byte "folder" markers are not files
                yield self._info(relative_key(name, prefix), int(obj.size or 0), obj.md5, obj.etag)
            start = response.data.next_start_with
            if not start:
                return

    def stat(self, path: str) -> ObjectInfo | None:
        headers = self._head(path)
        if headers is None:
            return None
        size = int(headers.get("content-length", "0"))
        md5_field = headers.get("opc-multipart-md5") or headers.get("content-md5")
        multipart = multipart_hex(md5_field)
        if multipart is None:
            return ObjectInfo(
                path=path, size=size, md5=b64_to_hex(md5_field) if md5_field else None, etag=headers.get("etag")
            )
        value = headers.get(f"opc-meta-{PART_SIZE_META}", "")
        return ObjectInfo(path=path, size=size, etag=multipart, part_size=int(value) if value.isdigit() else None)

    def read(self, path: str, start: int, length: int, *, info: ObjectInfo | None = None) -> Iterable[bytes]:
        if length <= 0:
            return
        what = self.describe(path)
        key = self.uri.key(path)
        response = self.call(
            lambda: self.client.get_object(
                self.namespace, self.bucket, key, range=f"bytes={start}-{start + length - 1}"
            ),
            what,
        )
        try:
            raw = response.data.raw
            while True:
                try:
                    # what has arrived, so a trickling body still reaches the low-speed check
                    chunk = read_arrived(lambda n: raw.read1(n, decode_content=False), READ_CHUNK)
                except Exception as exc:
                    raise RetryableError(f"reading {what} failed mid-stream: {exc}", obj=what) from exc
                if not chunk:
                    return
                yield chunk
        finally:
            with contextlib.suppress(Exception):
                response.data.close()

    def read_bytes(self, path: str) -> bytes | None:
        key = self.uri.key(path)
        try:
            response = self.client.get_object(self.namespace, self.bucket, key)
        except oci.exceptions.ServiceError as exc:
            if exc.status == 404 and exc.code != "BucketNotFound":
                return None
            raise translate(exc, self.describe(path), self.tls) from exc
        except Exception as exc:
            raise translate(exc, self.describe(path), self.tls) from exc
        content: bytes = response.data.content
        return content

    def open_upload(self, path: str, size: int, part_size: int, *, fingerprint: str = "") -> Upload:
        return OracleUpload(self, path, size, part_size, fingerprint)

    def put_bytes(self, path: str, data: bytes) -> None:
        key = self.uri.key(path)
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - protocol checksum
        self.call(
            lambda: self.client.put_object(self.namespace, self.bucket, key, data, content_md5=md5),
            self.describe(path),
        )

    def delete(self, path: str) -> None:
        key = self.uri.key(path)
        try:
            self.client.delete_object(self.namespace, self.bucket, key)
        except oci.exceptions.ServiceError as exc:
            if exc.status != 404 or exc.code == "BucketNotFound":
                raise translate(exc, self.describe(path), self.tls) from exc
        except Exception as exc:
            raise translate(exc, self.describe(path), self.tls) from exc

    def abort_upload(self, path: str, upload_id: str) -> None:
        """Abort a multipart upload of ``path`` (best effort: a leftover only costs storage until cleared)."""
        try:
            self.client.abort_multipart_upload(self.namespace, self.bucket, self.uri.key(path), upload_id)
        except Exception as exc:
            log.debug("could not abort the multipart upload of %s: %s", self.describe(path), exc)

    def cleanup_partials(self, keep: Iterable[str] | None = None, *, older_than: float | None = None) -> None:
        """Abort the multipart uploads whose resume record belongs to no file of the finished plan.

        Records created at or after ``older_than`` (this run's start) are left alone; cleanup never
        fails a sync.
        """
        if keep is None:
            return
        wanted = record_stems(keep)
        root = f"{self.uri.prefix}/" if self.uri.prefix else ""

        try:
            response = self.call(
                lambda: self.client.list_objects(
                    self.namespace, self.bucket, prefix=f"{root}{PARTIAL_DIR}/", fields="name,timeCreated"
                ),
                f"listing {self.describe(PARTIAL_DIR)}",
            )
            stale = [
                obj.name[len(root) :]
                for obj in response.data.objects or []
                if stale_record(obj.name, wanted)
                and (older_than is None or obj.time_created is None or obj.time_created.timestamp() < older_than)
            ]
            drop_records(self, stale, self.abort_upload)
        except Exception as exc:
            log.warning("could not clean up unfinished uploads under %s: %s", self.describe(PARTIAL_DIR), exc)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.base_client.session.close()
