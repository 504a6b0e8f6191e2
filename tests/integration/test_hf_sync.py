"""hf:// -> local through the real huggingface_hub, the real engine and a local Hub server."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelferry.cli.main import main
from modelferry.settings import HFCredentials, TransferSettings
from modelferry.storage.hf import HFStore, resolve_endpoint, resolve_token
from modelferry.storage.local import LocalStore
from modelferry.transfer.plan import SyncOptions
from modelferry.transfer.sync import SyncResult, sync
from modelferry.uri import parse_uri
from tests.servers.hfhub import FakeHub, HubRepo

MiB = 1 << 20


def model_files() -> dict[str, bytes]:
    """A small model: an LFS weight over several parts, LFS and git files in subdirectories."""
    rnd = hashlib.sha256(b"seed").digest() * (1 + (3 * MiB + 4321) // 32)
    return {
        "config.json": b'{"architectures": ["LlamaForCausalLM"], "hidden_size": 64}',
        "model.safetensors": rnd[: 3 * MiB + 4321],
        "tokenizer/tokenizer.json": b'{"version": "1.0"}' * 100,
        "tokenizer/special_tokens_map.json": b"{}",
        "README.md": b"# test model\n",
    }


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(token="hf_secret_token") as server:
        yield server


def transfer(**kw: object) -> TransferSettings:
    base: dict[str, object] = {"part_size": MiB, "concurrency": 4, "backoff_base": 0.01, "free_space_margin": 0}
    base.update(kw)
    return TransferSettings.model_validate(base)


def hf_sync(
    hub: FakeHub,
    uri: str,
    target: Path,
    *,
    token: str | None = None,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    **kw: object,
) -> SyncResult:
    settings = transfer(**kw)
    options = SyncOptions(include=include, exclude=exclude)
    source = HFStore(parse_uri(uri), HFCredentials(endpoint=hub.url, token=token), settings)
    try:
        return sync(source, LocalStore(parse_uri(str(target)), target), settings, options)
    finally:
        source.close()


def run_cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return int(exc.value.code or 0)


def assert_tree(target: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        assert (target / path).read_bytes() == data, path


def manifest(target: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((target / ".modelferry" / "manifest.json").read_text())
    return data


def test_hf_to_local_byte_for_byte_with_sha256_manifest(hub: FakeHub, tmp_path: Path) -> None:
    files = model_files()
    repo = hub.add(HubRepo("org/model", files))
    result = hf_sync(hub, "hf://org/model", tmp_path / "out")
    assert_tree(tmp_path / "out", files)
    assert result.revision == repo.sha
    assert result.files_copied == len(files)
    data = manifest(tmp_path / "out")
    assert data["revision"] == repo.sha
    assert data["source"] == "hf://org/model"
    entries = {e["path"]: e for e in data["files"]}  # type: ignore[attr-defined]
    for path, content in files.items():
        assert entries[path]["sha256"] == hashlib.sha256(content).hexdigest()
        assert entries[path]["size"] == len(content)
    # The weight went over the wire as four ranged GETs of 1 MiB (the last one shorter), by commit sha.
    gets = hub.file_gets("model.safetensors")
    assert sorted(r.range for r in gets if r.range) == [
        (0, MiB - 1),
        (MiB, 2 * MiB - 1),
        (2 * MiB, 3 * MiB - 1),
        (3 * MiB, 3 * MiB + 4320),
    ]
    assert {r.rev for r in hub.file_gets()} == {repo.sha}
    assert not (tmp_path / "out" / ".modelferry" / "partial").exists()


def test_branch_is_pinned_to_its_commit_sha(hub: FakeHub, tmp_path: Path) -> None:
    files = model_files()
    repo = hub.add(HubRepo("org/model", files, branches={"dev": "", "v1.0": ""}))
    repo.branches["dev"] = repo.sha
    code = run_cli(
        "sync", "hf://org/model@dev", str(tmp_path / "out"), "--hf-endpoint", hub.url, "--part-size", "1MiB",
        "--termination-log", str(tmp_path / "term"),
    )  # fmt: skip
    assert code == 0
    assert_tree(tmp_path / "out", files)
    assert manifest(tmp_path / "out")["revision"] == repo.sha
    # Every byte was fetched by sha, never by the moving branch name.
    assert {r.rev for r in hub.file_gets()} == {repo.sha}
    assert any(call.endswith("/revision/dev") for call in hub.api_calls)
    assert json.loads((tmp_path / "term").read_text())["revision"] == repo.sha


def test_colon_revision_form_with_a_commit_sha(hub: FakeHub, tmp_path: Path) -> None:
    repo = hub.add(HubRepo("org/model", {"config.json": b"{}"}))
    result = hf_sync(hub, f"hf://org/model:{repo.sha}", tmp_path / "out")
    assert result.revision == repo.sha


def test_include_and_exclude(hub: FakeHub, tmp_path: Path) -> None:
    files = model_files()
    hub.add(HubRepo("org/model", files))
    out = tmp_path / "out"
    code = run_cli(
        "sync", "hf://org/model", str(out), "--hf-endpoint", hub.url, "--include", "*.json",
        "--include", "tokenizer/", "--exclude", "tokenizer/special_tokens_map.json",
        "--termination-log", str(tmp_path / "term"),
    )  # fmt: skip
    assert code == 0
    copied = sorted(
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".modelferry" not in p.parts
    )
    assert copied == ["config.json", "tokenizer/tokenizer.json"]
    assert not hub.file_gets("model.safetensors")


def test_second_run_skips_everything_and_a_corrupted_file_is_refetched(hub: FakeHub, tmp_path: Path) -> None:
    files = model_files()
    hub.add(HubRepo("org/model", files))
    out = tmp_path / "out"
    hf_sync(hub, "hf://org/model", out)
    first = len(hub.file_gets())
    again = hf_sync(hub, "hf://org/model", out)
    assert again.files_copied == 0 and again.files_skipped == len(files)
    assert len(hub.file_gets()) == first  # nothing fetched the second time

    # Flip a byte in place, keeping size and mtime: the manifest can no longer vouch, hashing catches it.
    weight = out / "model.safetensors"
    st = weight.stat()
    with open(weight, "r+b") as fh:
        fh.seek(MiB + 5)
        byte = fh.read(1)
        fh.seek(MiB + 5)
        fh.write(bytes([byte[0] ^ 1]))
    os.utime(weight, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    (out / "config.json").write_bytes(b"{}")  # a different size: copied again without hashing
    before = {p: len(hub.file_gets(p)) for p in files}
    third = hf_sync(hub, "hf://org/model", out)
    fetched = {p for p in files if len(hub.file_gets(p)) > before[p]}
    assert fetched == {"config.json", "model.safetensors"}
    assert third.files_copied == 2 and third.files_skipped == len(files) - 2
    assert_tree(out, files)


def test_dataset_repo(hub: FakeHub, tmp_path: Path) -> None:
    files = {"data/train.jsonl": b'{"text": "hello"}\n' * 200, "README.md": b"# data\n", "data/.keep": b""}
    hub.add(HubRepo("org/data", files, repo_type="dataset"))
    hub.add(HubRepo("org/data", {"other.bin": b"model of the same name"}))
    result = hf_sync(hub, "hf://datasets/org/data", tmp_path / "out")
    assert result.files_copied == 3
    assert_tree(tmp_path / "out", files)


def test_gated_repo_with_token_from_file_and_no_auth_leak_to_cdn(tmp_path: Path) -> None:
    files = model_files()
    with FakeHub(token="hf_secret_token", cdn_redirect=True) as hub:
        hub.add(HubRepo("org/gated", files, gated=True))
        token_file = tmp_path / "token"
        token_file.write_text("hf_secret_token\n")
        code = run_cli(
            "sync", "hf://org/gated", str(tmp_path / "out"), "--hf-endpoint", hub.url,
            "--hf-token-file", str(token_file), "--termination-log", str(tmp_path / "term"),
        )  # fmt: skip
        assert code == 0
        assert_tree(tmp_path / "out", files)
        redirects = [r for r in hub.requests if r.status == 302]
        cdn = [r for r in hub.requests if r.port == hub.cdn_port]
        assert redirects and all(r.authorization == "Bearer hf_secret_token" for r in redirects)
        assert cdn and all(r.authorization is None for r in cdn)


def test_token_and_endpoint_from_environment(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add(HubRepo("org/gated", {"config.json": b"{}"}, gated=True))
    monkeypatch.setenv("HF_ENDPOINT", hub.url + "/")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    creds = HFCredentials()
    assert resolve_endpoint(creds) == hub.url
    assert resolve_token(creds) == "hf_secret_token"
    out = tmp_path / "out"
    code = run_cli("sync", "hf://org/gated", str(out), "--termination-log", str(tmp_path / "term"))
    assert code == 0
    assert (out / "config.json").read_bytes() == b"{}"


def test_server_that_ignores_range_cannot_corrupt_data(hub: FakeHub, tmp_path: Path) -> None:
    files = model_files()
    hub.add(HubRepo("org/model", files))
    hub.faults.ignore_range = True
    hf_sync(hub, "hf://org/model", tmp_path / "out")
    assert_tree(tmp_path / "out", files)


def test_dry_run_moves_nothing(hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub.add(HubRepo("org/model", model_files()))
    code = run_cli(
        "sync", "hf://org/model", str(tmp_path / "out"), "--hf-endpoint", hub.url, "--dry-run", "--json",
        "--termination-log", str(tmp_path / "term"),
    )  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "planned" and summary["files"] == 5
    assert {i["verify"] for i in summary["plan"]["items"]} == {"sha256", "git-sha1"}
    assert not hub.file_gets()
    assert not (tmp_path / "out").exists()


def test_server_speaks_what_huggingface_hub_downloads(tmp_path: Path) -> None:
    """The stand-in is faithful enough for huggingface_hub's own downloader (used by the benchmark)."""
    from huggingface_hub import snapshot_download

    files = model_files()
    with FakeHub(cdn_redirect=True) as hub:
        hub.add(HubRepo("org/model", files))
        path = snapshot_download("org/model", endpoint=hub.url, local_dir=tmp_path / "snap")
    assert_tree(Path(path), files)
