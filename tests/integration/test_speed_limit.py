"""The low-speed limit: servers that trickle bytes (never quite stalling) fail the sync after retries.

Real servers pace their bodies (a few bytes every few milliseconds); the limits are small so each test
takes about a second. Every reader path is covered: plain HTTP spliced into a local file (Hub ->
directory), plain HTTP received into memory (Hub -> bucket, which wants part MD5s), and the Oracle SDK's
urllib3 body.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelferry.errors import TooSlowError
from modelferry.settings import HFCredentials, OCICredentials, TransferSettings
from modelferry.storage.hf import HFStore
from modelferry.storage.local import LocalStore
from modelferry.storage.oracle import OracleStore
from modelferry.transfer.plan import SyncOptions
from modelferry.transfer.sync import sync
from modelferry.uri import parse_uri
from tests.integration.test_hf_sync import MiB, run_cli
from tests.integration.test_oracle import oci_config, store  # noqa: F401 - the fixture
from tests.servers.hfhub import FakeHub, HubRepo
from tests.servers.oracle import OracleServer

WEIGHTS = bytes(range(256)) * (MiB // 256)
LIMITS = {"speed_limit": 256 * 1024, "speed_time": 0.4, "retries": 1, "backoff_base": 0.01, "backoff_max": 0.02}


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.add(HubRepo("org/model", {"model.safetensors": WEIGHTS}))
        server.faults.trickle, server.faults.slow_delay = 64, 0.01  # ~6 KB/s, a byte every few ms
        yield server
        server.faults.trickle, server.faults.slow_delay = 0, 0.0  # let abandoned responses finish


def test_trickling_hub_fails_cli_sync_as_too_slow(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hub -> local directory (bytes spliced into the file) through the CLI flags."""
    log = tmp_path / "termination-log"
    code = run_cli("sync", "hf://org/model", str(tmp_path / "out"), "--hf-endpoint", hub.url,
                   "--speed-limit", "256KiB", "--speed-time", "0.4", "--retries", "1", "--concurrency", "2",
                   "--json", "--termination-log", str(log))  # fmt: skip
    assert code == 1  # retryable: the next run may find a faster server
    record = json.loads(log.read_text())
    assert record["reason"] == "TooSlow"
    assert "under the low-speed limit of 262144 bytes/s" in record["message"]
    assert json.loads(capsys.readouterr().out)["reason"] == "TooSlow"
    gets = hub.file_gets("model.safetensors")
    assert len(gets) >= 2  # retried before giving up
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_trickling_hub_fails_sync_on_the_buffered_read_path(hub: FakeHub, tmp_path: Path) -> None:
    """A server that ignores Range answers 200 with the whole body: read through urllib3, not the socket."""
    hub.faults.ignore_range = True
    hub.add(HubRepo("org/big", {"model.safetensors": WEIGHTS * 3}))
    settings = TransferSettings.model_validate({"part_size": MiB, "concurrency": 2, **LIMITS})
    source = HFStore(parse_uri("hf://org/big"), HFCredentials(endpoint=hub.url), settings)
    out = tmp_path / "out"
    try:
        with pytest.raises(TooSlowError, match="low-speed limit"):
            sync(source, LocalStore(parse_uri(str(out)), out), settings, SyncOptions())
    finally:
        source.close()
    assert len(hub.file_gets("model.safetensors")) >= 2


def test_trickling_hub_fails_sync_into_a_bucket(hub: FakeHub, oci_config: Path) -> None:  # noqa: F811
    """Hub -> bucket: the body is received into memory (part MD5s), one recv per chunk."""
    from tests.integration.test_oracle import transfer as oracle_transfer

    with OracleServer("nsdst") as target_server:
        target_server.create_bucket("models")
        settings = oracle_transfer(**LIMITS)
        source = HFStore(parse_uri("hf://org/model"), HFCredentials(endpoint=hub.url), settings)
        target = store(target_server, oci_config, "models", "model")
        with pytest.raises(TooSlowError, match="low-speed limit"):
            sync(source, target, settings, SyncOptions())
        assert "model/model.safetensors" not in target_server.buckets["models"]
    assert len(hub.file_gets("model.safetensors")) >= 2


def test_trickling_oracle_bucket_fails_sync_as_too_slow(oci_config: Path, tmp_path: Path) -> None:  # noqa: F811
    """Oracle -> local directory through the oci SDK's body."""
    from tests.integration.test_oracle import transfer as oracle_transfer

    with OracleServer("nssrc") as src:
        src.create_bucket("models")
        src.put("models", "llama/model.safetensors", WEIGHTS)
        src.trickle = (64, 0.01)
        settings = oracle_transfer(**LIMITS)
        creds = OCICredentials(config_file=str(oci_config), endpoint=src.endpoint)
        source = OracleStore(parse_uri(f"oci://n/{src.namespace}/b/models/o/llama"), creds, settings)
        out = tmp_path / "out"
        with pytest.raises(TooSlowError, match="low-speed limit"):
            sync(source, LocalStore(parse_uri(str(out)), out), settings, SyncOptions())
        object_gets = [p for m, p in src.requests if m == "GET" and p.endswith("model.safetensors")]
        assert len(object_gets) >= 2
        src.trickle = None  # let abandoned responses finish
    assert not (out / "model.safetensors").exists()
