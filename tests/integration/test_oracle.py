"""OracleStore through the real ``oci`` SDK against local Object Storage stand-ins."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("oci")

from modelferry.cli.main import main
from modelferry.errors import (
    AccessDeniedError,
    NotFoundError,
    PermanentError,
    RetryableError,
    ThrottledError,
    UsageError,
)
from modelferry.settings import OCICredentials, TransferSettings
from modelferry.storage.oracle import OracleStore
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri
from tests.servers.oracle import OracleServer

MiB = 1 << 20


def write_oci_config(directory: Path, region: str = "us-chicago-1", profile: str = "DEFAULT") -> Path:
    """A throwaway RSA key and an OCI config file pointing at it (the stand-in ignores signatures)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path = directory / "oci_api_key.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    config = directory / "oci_config"
    config.write_text(
        f"[{profile}]\n"
        "user=ocid1.user.oc1..aaaatest\n"
        "fingerprint=12:34:56:78:9a:bc:de:f0:12:34:56:78:9a:bc:de:f0\n"
        "tenancy=ocid1.tenancy.oc1..aaaatest\n"
        f"region={region}\n"
        f"key_file={key_path}\n"
    )
    return config


@pytest.fixture(scope="module")
def oci_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_oci_config(tmp_path_factory.mktemp("oci"))


@pytest.fixture
def chicago() -> Iterator[OracleServer]:
    with OracleServer("nschicago", page_size=3) as server:
        server.create_bucket("models")
        server.create_bucket("copy")
        yield server


@pytest.fixture
def frankfurt() -> Iterator[OracleServer]:
    with OracleServer("nsfrankfurt") as server:
        server.create_bucket("replica")
        yield server


def transfer(**kw: object) -> TransferSettings:
    base: dict[str, object] = {"part_size": MiB, "concurrency": 4, "backoff_base": 0.01, "backoff_max": 0.02}
    base.update(kw)
    return TransferSettings.model_validate(base)


def store(server: OracleServer, config: Path, bucket: str, prefix: str = "", region: str | None = None) -> OracleStore:
    creds = OCICredentials(config_file=str(config), endpoint=server.endpoint, region=region)
    uri = parse_uri(f"oci://n/{server.namespace}/b/{bucket}/o/{prefix}")
    return OracleStore(uri, creds, transfer())


def seed_model(server: OracleServer, bucket: str = "models", prefix: str = "llama") -> dict[str, bytes]:
    files = {
        "config.json": b'{"model_type": "llama"}',
        "model-00001.safetensors": os.urandom(3 * MiB + 123),
        "model-00002.safetensors": os.urandom(2 * MiB),
        "tokenizer/tokenizer.json": b"{}" * 1000,
        "empty.txt": b"",
        "odd dir/name +%2F&?#.txt": b"percent-encoded on the wire",
    }
    for name, data in files.items():
        server.put(bucket, f"{prefix}/{name}", data, parts=3 if len(data) > MiB else 1)
    server.put(bucket, "llama-hf/other.bin", b"not mine")  # a sibling prefix that must never be pulled
    return files


@pytest.fixture(autouse=True)
def _small_min_part(monkeypatch: pytest.MonkeyPatch) -> None:
    # Oracle's real minimum part is 10 MiB; 1 MiB parts keep these tests small and fast.
    monkeypatch.setattr(OracleStore, "features", OracleStore.features.__class__(min_part_size=MiB, max_parts=10_000))


def test_listing_pages_and_checksums(chicago: OracleServer, oci_config: Path) -> None:
    files = seed_model(chicago)
    src = store(chicago, oci_config, "models", "llama")
    listed = {i.path: i for i in src.list()}
    assert set(listed) == set(files)  # paged by 3, sibling prefix llama-hf excluded
    single = listed["config.json"]
    assert single.md5 == hashlib.md5(files["config.json"]).hexdigest()
    multi = listed["model-00001.safetensors"]
    assert multi.multipart_count == 3 and multi.part_size == -(-(3 * MiB + 123) // 3)
    assert src.stat("model-00001.safetensors") == multi
    assert src.stat("missing") is None
    assert b"".join(src.read("model-00002.safetensors", 10, 100)) == files["model-00002.safetensors"][10:110]


def test_oci_to_oci_cross_region_byte_for_byte_then_skip(
    chicago: OracleServer, frankfurt: OracleServer, oci_config: Path
) -> None:
    files = seed_model(chicago)
    src = store(chicago, oci_config, "models", "llama")
    target_store = store(frankfurt, oci_config, "replica", "meta/llama", region="eu-frankfurt-1")
    assert src.identity() != target_store.identity()
    result = sync(src, target_store, transfer())
    assert result.files_copied == len(files)
    for name, data in files.items():
        assert frankfurt.get("replica", f"meta/llama/{name}") == data
    big = frankfurt.buckets["replica"]["meta/llama/model-00001.safetensors"]
    # Parts line up with the source's 3 parts, so the multipart checksum is verified from per-part MD5s.
    assert big.multipart_md5 == chicago.buckets["models"]["llama/model-00001.safetensors"].multipart_md5
    manifest = json.loads(frankfurt.get("replica", "meta/llama/.modelferry/manifest.json"))
    assert {f["path"] for f in manifest["files"]} == set(files)
    assert not frankfurt.uploads  # nothing left half-uploaded

    again = sync(
        store(chicago, oci_config, "models", "llama"), store(frankfurt, oci_config, "replica", "meta/llama"), transfer()
    )
    assert again.files_copied == 0 and again.files_skipped == len(files)

    # The copy is itself a source whose multipart ETags are verifiable (part size recorded in metadata).
    back = sync(store(frankfurt, oci_config, "replica", "meta/llama"), store(chicago, oci_config, "copy"), transfer())
    assert back.files_copied == len(files)
    assert chicago.get("copy", "model-00001.safetensors") == files["model-00001.safetensors"]


def test_oci_to_local_and_local_to_oci(chicago: OracleServer, oci_config: Path, tmp_path: Path) -> None:
    from modelferry.storage.local import LocalStore

    files = seed_model(chicago)
    local = tmp_path / "model"
    result = sync(store(chicago, oci_config, "models", "llama"), LocalStore(parse_uri(str(local)), local), transfer())
    assert result.files_copied == len(files)
    for name, data in files.items():
        assert (local / name).read_bytes() == data
    again = sync(store(chicago, oci_config, "models", "llama"), LocalStore(parse_uri(str(local)), local), transfer())
    assert again.files_copied == 0

    up = sync(LocalStore(parse_uri(str(local)), local), store(chicago, oci_config, "copy", "up"), transfer())
    assert up.files_copied == len(files)
    for name, data in files.items():
        assert chicago.get("copy", f"up/{name}") == data
    up_again = sync(LocalStore(parse_uri(str(local)), local), store(chicago, oci_config, "copy", "up"), transfer())
    assert up_again.files_copied == 0


def test_cli_missing_bucket_exits_3_naming_it(
    chicago: OracleServer, oci_config: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "sync",
                f"oci://n/{chicago.namespace}/b/nosuchbucket/o/llama",
                str(tmp_path / "out"),
                "--oci-config",
                str(oci_config),
                "--source-endpoint",
                chicago.endpoint,
            ]
        )
    assert exit_info.value.code == 3
    err = capfd.readouterr().err
    assert "NotFoundError" in err and "nosuchbucket" in err and "BucketNotFound" in err


def test_cli_corrupt_object_refetched_then_exit_3(
    chicago: OracleServer, oci_config: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    seed_model(chicago)
    chicago.corrupt("models", "llama/model-00002.safetensors")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "sync",
                f"oci://n/{chicago.namespace}/b/models/o/llama",
                str(out),
                "--oci-config",
                str(oci_config),
                "--source-endpoint",
                chicago.endpoint,
                "--part-size",
                "1MiB",
            ]
        )
    assert exit_info.value.code == 3
    err = capfd.readouterr().err
    assert "fetching it again" in err and "failed verification twice" in err
    assert not (out / "model-00002.safetensors").exists()
    gets = [p for m, p in chicago.requests if m == "GET" and p.endswith("model-00002.safetensors")]
    assert len(gets) >= 4  # two 1 MiB ranges, fetched twice


def test_bad_config_file_is_usage_error(tmp_path: Path, chicago: OracleServer) -> None:
    uri = parse_uri(f"oci://n/{chicago.namespace}/b/models/o/")
    with pytest.raises(UsageError, match="not found"):
        OracleStore(uri, OCICredentials(config_file=str(tmp_path / "nope")), transfer())
    bad = tmp_path / "bad"
    bad.write_text("[DEFAULT]\nuser=x\n")
    with pytest.raises(UsageError, match=str(bad)):
        OracleStore(uri, OCICredentials(config_file=str(bad)), transfer())
    with pytest.raises(UsageError, match="profile 'OTHER'"):
        OracleStore(uri, OCICredentials(config_file=str(write_oci_config(tmp_path)), profile="OTHER"), transfer())


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (404, "BucketNotFound", NotFoundError),
        (401, "NotAuthenticated", AccessDeniedError),
        (403, "NotAuthorized", AccessDeniedError),
        (429, "TooManyRequests", ThrottledError),
        (503, "ServiceUnavailable", ThrottledError),
        (500, "InternalServerError", RetryableError),
        (400, "InvalidContentMD5", RetryableError),
        (400, "InvalidParameter", PermanentError),
    ],
)
def test_error_translation(
    chicago: OracleServer, oci_config: Path, status: int, code: str, error: type[Exception]
) -> None:
    src = store(chicago, oci_config, "models")
    chicago.fail_next.append((status, code))
    with pytest.raises(error):
        list(src.list())


def test_connection_refused_is_retryable(oci_config: Path) -> None:
    with OracleServer() as server:
        endpoint = server.endpoint
    creds = OCICredentials(config_file=str(oci_config), endpoint=endpoint)
    src = OracleStore(parse_uri("oci://n/testns/b/models/o/x"), creds, transfer(connect_timeout=2))
    with pytest.raises(RetryableError):
        src.resolve()


def test_failed_upload_is_aborted_and_invisible(chicago: OracleServer, oci_config: Path) -> None:
    target_store = store(chicago, oci_config, "copy")
    upload = target_store.open_upload("big.bin", 3 * MiB, MiB)
    assert chicago.uploads
    writer = upload.part(0, 0, MiB)
    writer.write(b"x" * MiB)
    writer.commit()
    upload.abort(keep_partial=True)
    assert not chicago.uploads and "big.bin" not in chicago.buckets["copy"]


def test_principal_signers_are_wired(monkeypatch: pytest.MonkeyPatch) -> None:
    import oci

    made: list[str] = []
    real = oci.auth.signers.InstancePrincipalsSecurityTokenSigner

    class FakeSigner(real):  # type: ignore[misc, valid-type]
        """Skips the metadata service; validate_config accepts it as a self-sufficient signer."""

        region = "us-ashburn-1"
        tenancy_id = "ocid1.tenancy.oc1..signer"

        def __init__(self, kind: str = "instance") -> None:
            made.append(kind)

    monkeypatch.setattr(oci.auth.signers, "InstancePrincipalsSecurityTokenSigner", FakeSigner)
    monkeypatch.setattr(oci.auth.signers, "get_resource_principals_signer", lambda: FakeSigner("resource"))
    uri = parse_uri("oci://n/ns/b/b/o/p")
    for auth in ("instance_principal", "resource_principal"):
        creds = OCICredentials(auth_type=auth, endpoint="http://127.0.0.1:9")
        st = OracleStore(uri, creds, transfer())
        assert "us-ashburn-1" in st.identity() and "ocid1.tenancy.oc1..signer" in st.identity()
    assert made == ["instance", "resource"]

    def broken() -> None:
        raise RuntimeError("metadata service unreachable")

    monkeypatch.setattr(oci.auth.signers, "get_resource_principals_signer", broken)
    with pytest.raises(UsageError, match="resource principal"):
        OracleStore(uri, OCICredentials(auth_type="resource_principal"), transfer())


# -- resume: a kept multipart upload carries on in the next run -----------------------------------


def test_a_kept_upload_resumes_in_the_next_run_and_a_left_out_file_is_aborted(
    frankfurt: OracleServer, oci_config: Path, tmp_path: Path
) -> None:
    from modelferry.errors import RetryableError
    from modelferry.storage.base import PARTIAL_DIR, partial_stem
    from modelferry.transfer.plan import SyncOptions
    from tests.integration.test_s3_resume import FlakySource

    data = os.urandom(6 * MiB - 123)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.bin").write_bytes(data)
    settings = transfer(concurrency=1, retries=1)
    record = f"meta/llama/{PARTIAL_DIR}/{partial_stem('big.bin')}.json"

    def run(source: FlakySource, options: SyncOptions | None = None) -> None:
        sync(source, store(frankfurt, oci_config, "replica", "meta/llama"), settings, options or SyncOptions())

    with pytest.raises(RetryableError, match="injected"):
        run(FlakySource(tmp_path / "src", fail_from=3 * MiB))
    assert len(frankfurt.uploads) == 1 and "meta/llama/big.bin" not in frankfurt.buckets["replica"]
    saved = json.loads(frankfurt.get("replica", record))
    assert saved["checkpoint"]["position"] == 3 * MiB and sorted(saved["parts"]) == ["0", "1", "2"]

    source = FlakySource(tmp_path / "src")
    run(source)
    assert {start for _, start in source.reads} == {3 * MiB, 4 * MiB, 5 * MiB}  # parts 0-2 not read again
    assert frankfurt.get("replica", "meta/llama/big.bin") == data
    manifest = json.loads(frankfurt.get("replica", "meta/llama/.modelferry/manifest.json"))
    assert manifest["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert frankfurt.uploads == {} and record not in frankfurt.buckets["replica"]

    (tmp_path / "src" / "other.bin").write_bytes(data)  # a second kept upload, then left out of the next run
    with pytest.raises(RetryableError, match="injected"):
        run(FlakySource(tmp_path / "src", fail_from=3 * MiB), SyncOptions(include=("other.bin",)))
    assert len(frankfurt.uploads) == 1
    run(FlakySource(tmp_path / "src"), SyncOptions(include=("big.bin",)))
    assert frankfurt.uploads == {}
    assert not [k for k in frankfurt.buckets["replica"] if "/partial/" in k]
