"""Read URLs built from a template (anonymous S3, Hub resolve) must equal what botocore and huggingface_hub spell."""

from __future__ import annotations

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config

from modelferry.storage.s3_fastread import URL_CACHE, PresignedReader

KEYS = ["plain.bin", "model/a b/ü+%x?.bin", "x/~y/z=1&2#frag", "dir//double/", "emoji/🤗.json", "semi;colon,comma"]


@pytest.mark.parametrize("style", ["path", "virtual"])
@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "https://s3.example.com:8443/base"])
def test_unsigned_urls_equal_botocores(style: str, endpoint: str) -> None:
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, s3={"addressing_style": style}),
    )
    reader = PresignedReader(client, "my-bucket", None)  # type: ignore[arg-type]  # no reads here
    for key in KEYS:
        assert reader.url(key) == client.generate_presigned_url(
            "get_object", Params={"Bucket": "my-bucket", "Key": key}
        )
    assert reader.presigned == 0  # nothing cached or signed per key


def test_signed_url_cache_is_bounded() -> None:
    client = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret").client(
        "s3", endpoint_url="http://127.0.0.1:9000", region_name="us-east-1", config=Config(signature_version="s3v4")
    )
    reader = PresignedReader(client, "b", None)  # type: ignore[arg-type]
    first = reader.url("k0")
    assert "X-Amz-Signature=" in first and reader.url("k0") == first  # cached
    for n in range(1, URL_CACHE + 5):
        reader.url(f"k{n}")
    assert len(reader._urls) == URL_CACHE and "k0" not in reader._urls


@pytest.mark.parametrize("endpoint", ["https://huggingface.co", "http://127.0.0.1:8080/mirror"])
@pytest.mark.parametrize("kind", ["model", "dataset"])
def test_hub_resolve_urls_equal_hf_hub_url(endpoint: str, kind: str) -> None:
    from huggingface_hub import hf_hub_url

    from modelferry.settings import HFCredentials, TransferSettings
    from modelferry.storage.hf import HFStore
    from modelferry.uri import parse_uri

    uri = parse_uri("hf://org/repo" if kind == "model" else "hf://datasets/org/repo")
    store = HFStore(uri, HFCredentials(endpoint=endpoint), TransferSettings())
    store._sha = "0123456789abcdef0123456789abcdef01234567"  # pinned without a server
    for path in KEYS:
        want = hf_hub_url(store.repo_id, path, repo_type=store.repo_type, revision=store._sha, endpoint=endpoint)
        assert store.file_url(path) == want
