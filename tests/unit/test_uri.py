from __future__ import annotations

import pytest

from modelferry.errors import InvalidURIError, UnsafePathError
from modelferry.uri import parse_uri, safe_relpath, under_prefix


@pytest.mark.parametrize(
    ("raw", "scheme", "bucket", "prefix", "extra"),
    [
        ("hf://meta-llama/Llama-3.2-1B", "hf", "meta-llama/Llama-3.2-1B", "", {"revision": ""}),
        ("hf://org/model@v1.0", "hf", "org/model", "", {"revision": "v1.0"}),
        ("hf://org/model:refs/pr/1", "hf", "org/model", "", {"revision": "refs/pr/1"}),
        ("hf://datasets/org/data", "hf", "org/data", "", {"repo_type": "dataset"}),
        ("s3://bucket/models/llama/", "s3", "bucket", "models/llama", {}),
        ("s3://bucket", "s3", "bucket", "", {}),
        ("cos://my-cos/models", "cos", "my-cos", "models", {}),
        (
            "oci://n/idqj093njucb/b/model-store/o/meta/llama-3-2-1b/",
            "oci",
            "model-store",
            "meta/llama-3-2-1b",
            {"namespace": "idqj093njucb"},
        ),
        ("oci://n/ns/b/bucket", "oci", "bucket", "", {"namespace": "ns"}),
        ("pvc://demo:models-pvc/llama", "pvc", "models-pvc", "llama", {"namespace": "demo"}),
        ("pvc://models-pvc", "pvc", "models-pvc", "", {"namespace": ""}),
    ],
)
def test_accepted_forms(raw: str, scheme: str, bucket: str, prefix: str, extra: dict[str, str]) -> None:
    uri = parse_uri(raw)
    assert (uri.scheme, uri.bucket, uri.prefix) == (scheme, bucket, prefix)
    for key, value in extra.items():
        assert getattr(uri, key) == value


def test_plain_and_file_paths(tmp_path) -> None:
    assert parse_uri(str(tmp_path)).path == str(tmp_path)
    assert parse_uri(f"file://{tmp_path}").path == str(tmp_path)
    assert parse_uri("relative/dir").path.endswith("relative/dir")


def test_revision_flag_overrides_uri() -> None:
    assert parse_uri("hf://org/model@main", revision="abc123").revision == "abc123"


@pytest.mark.parametrize(
    "raw",
    [
        "gs://bucket/x",
        "hf://justone",
        "hf://a/b/c",
        "s3://",
        "s3://b/a/../c",
        "s3://b/a//c",
        "oci://bucket/prefix",
        "pvc://Bad_Claim/x",
        "file://relative",
        "hf://org/model@",
        "",
    ],
)
def test_malformed_uris_show_accepted_forms(raw: str) -> None:
    with pytest.raises(InvalidURIError) as info:
        parse_uri(raw)
    assert "Accepted forms" in str(info.value)
    assert info.value.exit_code == 2


def test_prefix_matches_at_directory_boundary() -> None:
    assert under_prefix("model/config.json", "model")
    assert under_prefix("model/config.json", "model/")
    assert not under_prefix("model-hf/config.json", "model")
    assert under_prefix("anything", "")


@pytest.mark.parametrize("name", ["../etc/passwd", "/abs/path", "a/../../b", "a//b", "a\\b", "C:/x", "", "a/./b"])
def test_unsafe_remote_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafePathError):
        safe_relpath(name)


def test_child_and_str_roundtrip() -> None:
    uri = parse_uri("s3://bucket/models")
    assert uri.key("config.json") == "models/config.json"
    assert str(uri.child("sub")) == "s3://bucket/models/sub"
    assert str(parse_uri("oci://n/ns/b/bkt/o/p")) == "oci://n/ns/b/bkt/o/p"
