"""``modelferry hf-download --config`` and ``modelferry replica --config`` end to end on local stand-ins."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelferry.cli.main import main
from tests.servers.hfhub import FakeHub, HubRepo

MiB = 1 << 20


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    code = exit_info.value.code
    return code if isinstance(code, int) else 0


def model_files() -> dict[str, bytes]:
    blob = hashlib.sha256(b"ome").digest() * (1 + (2 * MiB + 77) // 32)
    return {
        "config.json": b'{"model_type": "llama"}',
        "model.safetensors": blob[: 2 * MiB + 77],
        "tokenizer/tokenizer.json": b'{"v": 1}' * 300,
    }


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub(token="hf_omeagenttoken123456789") as server:
        server.add(HubRepo("meta/llama-mini", model_files(), gated=True))
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("MODELFERRY_TRANSFER__PART_SIZE", str(MiB))
        monkeypatch.setenv("MODELFERRY_TRANSFER__FREE_SPACE_MARGIN", "0")
        yield server


def write_config(path: Path, **values: object) -> Path:
    lines = []
    for key, value in values.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines.extend(f"  {k}: {json.dumps(v)}" for k, v in value.items())
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def hf_config(tmp_path: Path, **extra: object) -> Path:
    values: dict[str, object] = {
        "model_name": "meta/llama-mini",
        "hf_token": "hf_omeagenttoken123456789",
        "local_path": str(tmp_path / "model"),
        "num_connections": 4,
        "max_retries": 1,
        "retry_internal_in_seconds": 0.01,
        # keys of other subcommands in the same file are ignored
        "vault_id": "ocid1.vault.oc1..x",
        "source": {"bucket_name": "unused", "namespace": "ns"},
    }
    values.update(extra)
    return write_config(tmp_path / "agent.yaml", **values)


def test_hf_download_then_skip(hub: FakeHub, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    config = hf_config(tmp_path)
    assert run(["hf-download", "--config", str(config), "--json"]) == 0
    summary = json.loads(capfd.readouterr().out)
    assert summary["files_copied"] == 3
    for name, data in model_files().items():
        assert (tmp_path / "model" / name).read_bytes() == data
    assert (tmp_path / "model" / ".modelferry" / "manifest.json").exists()

    assert run(["hf-download", "--config", str(config), "--json", "--debug"]) == 0
    captured = capfd.readouterr()
    assert json.loads(captured.out)["files_skipped"] == 3
    assert "DEBUG" in captured.err and "hf_omeagenttoken123456789" not in captured.err


def test_hf_download_env_overrides_and_skip_sha(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    config = hf_config(tmp_path)
    other = tmp_path / "elsewhere"
    monkeypatch.setenv("OME_AGENT_LOCAL_PATH", str(other))
    monkeypatch.setenv("OME_AGENT_SKIP_SHA", "true")
    assert run(["hf-download", "--config", str(config)]) == 0
    assert (other / "model.safetensors").read_bytes() == model_files()["model.safetensors"]
    assert "skip_sha is set" in capfd.readouterr().err


def test_hf_download_size_limit(hub: FakeHub, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    config = hf_config(tmp_path, download_size_limit_gb=0.000001)
    assert run(["hf-download", "--config", str(config)]) == 3
    assert "SizeLimitError" in capfd.readouterr().err
    assert not (tmp_path / "model" / "model.safetensors").exists()
    config = hf_config(tmp_path, download_size_limit_gb=0.000001, enable_size_limit_check=False)
    assert run(["hf-download", "--config", str(config)]) == 0


def test_hf_download_corrupt_is_refetched_then_fails(
    hub: FakeHub, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    hub.faults.corrupt = "always"
    hub.faults.corrupt_path = "model.safetensors"
    assert run(["hf-download", "--config", str(hf_config(tmp_path))]) == 3
    err = capfd.readouterr().err
    assert "IntegrityError" in err and "fetching it again" in err
    assert not (tmp_path / "model" / "model.safetensors").exists()


def test_hf_download_usage_errors(hub: FakeHub, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "a.yaml", local_path=str(tmp_path / "m"))
    assert run(["hf-download", "--config", str(config)]) == 2
    assert "needs model_name" in capfd.readouterr().err
    assert run(["hf-download", "--config", str(tmp_path / "missing.yaml")]) == 2
    config = hf_config(tmp_path, num_connections="lots")
    assert run(["hf-download", "--config", str(config)]) == 2
    assert "OME_AGENT_NUM_CONNECTIONS" in capfd.readouterr().err


def test_hf_download_warns_on_unsupported_keys(hub: FakeHub, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    config = hf_config(tmp_path, tensorrtllm_version="v0.11.0", node_shape_alias="A10", colour="blue")
    assert run(["hf-download", "--config", str(config), "--dry-run"]) == 0
    err = capfd.readouterr().err
    assert "tensorrtllm_version is not supported" in err and "node_shape_alias is not supported" in err
    assert "unknown OME-Agent key colour" in err
    assert "vault_id" not in err  # another subcommand's key: not worth a warning


# -- replica ---------------------------------------------------------------------------


@pytest.fixture
def oracle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[object, object, Path]]:
    pytest.importorskip("oci")
    from tests.integration.test_oracle import write_oci_config
    from tests.servers.oracle import OracleServer

    monkeypatch.setenv("MODELFERRY_TRANSFER__PART_SIZE", str(MiB))
    with OracleServer("tenancya") as src, OracleServer("tenancyb") as target_server:
        src.create_bucket("model-store")
        target_server.create_bucket("test-bucket")
        yield src, target_server, write_oci_config(tmp_path)


def replica_args(oracle: tuple[object, object, Path], config: Path) -> list[str]:
    src, target_server, oci_config = oracle
    return [
        "replica",
        "--config",
        str(config),
        "--oci-config",
        str(oci_config),
        "--source-endpoint",
        src.endpoint,  # type: ignore[attr-defined]
        "--target-endpoint",
        target_server.endpoint,  # type: ignore[attr-defined]
    ]


def replica_config(tmp_path: Path, **extra: object) -> Path:
    values: dict[str, object] = {
        "auth_type": "UserPrincipal",
        "profile": "DEFAULT",
        "num_connections": 3,
        "max_retry": 1,
        "retry_internal_in_seconds": 0.01,
        "model_name": "ignored-by-replica",
        "source": {
            "bucket_name": "model-store",
            "prefix": "meta/llama/",
            "region": "us-chicago-1",
            "namespace": "tenancya",
        },
        "target": {
            "bucket_name": "test-bucket",
            "prefix": "meta/llama/",
            "region": "eu-frankfurt-1",
            "namespace": "tenancyb",
        },
    }
    values.update(extra)
    return write_config(tmp_path / "replica.yaml", **values)


def test_replica_cross_tenancy_then_skip(
    oracle: tuple[object, object, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from tests.servers.oracle import OracleServer

    src, target_server = oracle[0], oracle[1]
    assert isinstance(src, OracleServer) and isinstance(target_server, OracleServer)
    files = model_files()
    for name, data in files.items():
        src.put("model-store", f"meta/llama/{name}", data, parts=2 if len(data) > MiB else 1)
    src.put("model-store", "meta/llama-70b/x.bin", b"sibling prefix")
    config = replica_config(tmp_path)
    assert run([*replica_args(oracle, config), "--json"]) == 0
    assert json.loads(capfd.readouterr().out)["files_copied"] == 3
    for name, data in files.items():
        assert target_server.get("test-bucket", f"meta/llama/{name}") == data
    assert "meta/llama-70b/x.bin" not in target_server.buckets["test-bucket"]
    assert run([*replica_args(oracle, config), "--json"]) == 0
    assert json.loads(capfd.readouterr().out)["files_skipped"] == 3


def test_replica_missing_bucket_exits_3(
    oracle: tuple[object, object, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = replica_config(tmp_path, source={"bucket_name": "gone", "namespace": "tenancya", "region": "us-chicago-1"})
    assert run(replica_args(oracle, config)) == 3
    assert "gone" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"auth_type": "OboToken"}, "auth_type 'OboToken' is not supported"),
        (
            {"source": {"bucket_name": "model-store", "namespace": "tenancya", "storage_tier": "archive"}},
            "source.storage_tier",
        ),
        ({"target": {"bucket_name": "test-bucket"}}, "target.namespace"),
    ],
)
def test_replica_usage_errors(
    oracle: tuple[object, object, Path],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    extra: dict[str, object],
    match: str,
) -> None:
    assert run(replica_args(oracle, replica_config(tmp_path, **extra))) == 2
    assert match in capfd.readouterr().err
