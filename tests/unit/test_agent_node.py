"""Shape filter, disk placement and watermark, ConfigMap entries and node labels, resources, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelferry.controller.agent.disk import AGENT_MARKER, DiskUsage, check_watermark, model_dir, stale_dirs
from modelferry.controller.agent.entries import (
    RESOURCES_KEY,
    ModelEntry,
    ModelStatus,
    data_patch,
    desired_data,
    label_key,
    labels_patch,
    parse_entry,
)
from modelferry.controller.agent.metrics import AgentMetrics
from modelferry.controller.agent.resources import collect, network_bytes
from modelferry.controller.agent.shape import (
    detect_shape,
    excluded_shape_dirs,
    is_trtllm,
    shape_from_gpu_names,
    shape_from_labels,
)
from modelferry.controller.agent.tasks import ModelRef
from modelferry.errors import InsufficientSpaceError, UnsafePathError

REF = ModelRef("BaseModel", "team", "llama")
CREF = ModelRef("ClusterBaseModel", "", "mistral")

TRT_FILES = [
    "config.json",
    "tokenizer.json",
    "GPU.H100.8/rank0.engine",
    "GPU.H100.8/config.json",
    "GPU.A100.4/rank0.engine",
    "engines/BM.GPU.A10.2/rank0.engine",
    "README.md",
]


def test_shape_filter_keeps_matching_and_agnostic_files() -> None:
    assert excluded_shape_dirs(TRT_FILES, "GPU.H100.8") == ["GPU.A100.4/", "engines/BM.GPU.A10.2/"]
    assert excluded_shape_dirs(TRT_FILES, "BM.GPU.A10.2") == ["GPU.A100.4/", "GPU.H100.8/"]
    # Unknown shape: only shape-agnostic files.
    assert excluded_shape_dirs(TRT_FILES, None) == ["GPU.A100.4/", "GPU.H100.8/", "engines/BM.GPU.A10.2/"]
    assert excluded_shape_dirs(["config.json", "model.safetensors"], "GPU.H100.8") == []


def test_shape_detection_order() -> None:
    assert shape_from_gpu_names(["NVIDIA H100 80GB HBM3"] * 8) == "GPU.H100.8"
    assert shape_from_gpu_names([]) is None
    assert shape_from_labels({"node.kubernetes.io/instance-type": "BM.GPU.A100-v2.8"}) == "BM.GPU.A100-v2.8"
    assert shape_from_labels({"nvidia.com/gpu.product": "NVIDIA-L40S", "nvidia.com/gpu.count": "4"}) == "GPU.L40S.4"
    assert shape_from_labels({"zone": "a"}) is None
    labels = {"nvidia.com/gpu.product": "NVIDIA-A10G", "nvidia.com/gpu.count": "1"}
    assert detect_shape("GPU.X.1", labels, gpu_names=["NVIDIA A100-SXM4-80GB"] * 2) == "GPU.A100.2"  # NVML wins
    assert detect_shape("GPU.X.1", labels, gpu_names=[]) == "GPU.X.1"  # then the alias
    assert detect_shape(None, labels, gpu_names=[]) == "GPU.A10G.1"  # then labels


def test_is_trtllm() -> None:
    assert is_trtllm({"spec": {"modelFormat": {"name": "TensorRTLLM"}}})
    assert is_trtllm({"spec": {"modelFramework": {"name": "trtllm"}}})
    assert not is_trtllm({"spec": {"modelFormat": {"name": "safetensors"}}})


def test_model_dir(tmp_path: Path) -> None:
    assert model_dir(tmp_path, REF, None) == tmp_path / "team" / "llama"
    assert model_dir(tmp_path, CREF, None) == tmp_path / "_cluster" / "mistral"
    assert model_dir(tmp_path, REF, "team/llama-3") == tmp_path / "team" / "llama-3"
    assert model_dir(tmp_path, CREF, "shared/llama-3") == tmp_path / "shared" / "llama-3"
    assert model_dir(tmp_path, REF, str(tmp_path / "team" / "abs")) == tmp_path / "team" / "abs"
    with pytest.raises(UnsafePathError, match="outside the models root"):
        model_dir(tmp_path, REF, "/etc")
    with pytest.raises(UnsafePathError, match="outside the models root"):
        model_dir(tmp_path, REF, str(tmp_path))
    with pytest.raises(Exception, match=r"\.\."):
        model_dir(tmp_path, REF, "../escape")


def test_watermark() -> None:
    usage = DiskUsage(total=1000, used=500, free=500)
    check_watermark(usage, 399, 0.9, what="m")
    check_watermark(usage, 400, 0.9, what="m")
    with pytest.raises(InsufficientSpaceError, match="high watermark") as err:
        check_watermark(usage, 401, 0.9, what="BaseModel/team/llama")
    assert err.value.reason == "InsufficientSpace"
    assert "MODELFERRY_AGENT__HIGH_WATERMARK" in str(err.value)


def test_stale_dirs(tmp_path: Path) -> None:
    for rel in ("team/keep", "team/gone", "team/keep.modelferry-new", "team/gone.modelferry-new"):
        (tmp_path / rel / ".modelferry").mkdir(parents=True)
        (tmp_path / rel / AGENT_MARKER).write_text("{}")
    (tmp_path / "team" / "x.modelferry-old").mkdir()
    (tmp_path / "team" / "keep2.modelferry-new" / ".modelferry" / "partial").mkdir(parents=True)  # resumable
    (tmp_path / "team" / "dropped.modelferry-new").mkdir()  # interrupted, no longer wanted
    (tmp_path / "user-model").mkdir()  # not ours: no marker, never touched
    found = stale_dirs(tmp_path, {tmp_path / "team" / "keep", tmp_path / "team" / "keep2"})
    assert found == [
        tmp_path / "team" / "dropped.modelferry-new",
        tmp_path / "team" / "gone",
        tmp_path / "team" / "gone.modelferry-new",
        tmp_path / "team" / "x.modelferry-old",
    ]


def test_configmap_entries_render_and_diff() -> None:
    entries = {
        REF: ModelEntry(REF, ModelStatus.READY, config={"modelType": "llama"}),
        CREF: ModelEntry(CREF, ModelStatus.FAILED, reason="AccessDenied", message="denied"),
        ModelRef("BaseModel", "x", "gone"): ModelEntry(ModelRef("BaseModel", "x", "gone"), ModelStatus.DELETED),
    }
    data = desired_data(entries, {"cpuCount": 4})
    assert set(data) == {"team.basemodel.llama", "clusterbasemodel.mistral", RESOURCES_KEY}
    body = parse_entry(data["team.basemodel.llama"])
    assert body == {
        "name": "llama",
        "namespace": "team",
        "kind": "BaseModel",
        "status": "Ready",
        "config": {"modelType": "llama"},
    }
    assert parse_entry(data["clusterbasemodel.mistral"])["reason"] == "AccessDenied"  # type: ignore[index]
    assert parse_entry("garbage") is None
    assert data_patch(data, data) is None
    edited = dict(data, **{"team.basemodel.llama": "{}", "someone-else": "x"})
    assert data_patch(edited, data) == {"team.basemodel.llama": data["team.basemodel.llama"], "someone-else": None}
    assert data_patch(None, data) == data


def test_label_keys_and_patch() -> None:
    assert label_key("models.modelferry.io", REF) == "models.modelferry.io/team.basemodel.llama"
    long_ref = ModelRef("BaseModel", "a-very-long-namespace-name-for-testing", "and-an-even-longer-model-name-here")
    key = label_key("models.modelferry.io", long_ref)
    name = key.split("/", 1)[1]
    assert len(name) <= 63 and name[0].isalnum() and name[-1].isalnum()
    assert key != label_key("models.modelferry.io", ModelRef("BaseModel", long_ref.namespace, long_ref.name + "2"))
    current = {
        "zone": "a",
        "models.modelferry.io/old.basemodel.x": "Ready",
        "models.modelferry.io/team.basemodel.llama": "Updating",
    }
    patch = labels_patch("models.modelferry.io", current, {REF: ModelStatus.READY, CREF: ModelStatus.DELETED})
    assert patch == {"models.modelferry.io/team.basemodel.llama": "Ready", "models.modelferry.io/old.basemodel.x": None}
    assert (
        labels_patch(
            "models.modelferry.io", {"models.modelferry.io/team.basemodel.llama": "Ready"}, {REF: ModelStatus.READY}
        )
        is None
    )


def test_resources_and_metrics(tmp_path: Path) -> None:
    res = collect(tmp_path, gpus=[{"index": 0, "name": "NVIDIA H100", "memoryTotalBytes": 1}])
    assert res["cpuCount"] >= 1 and res["memoryTotalBytes"] > 0 and res["modelsRootTotalBytes"] > 0
    json.dumps(res)
    metrics = AgentMetrics()
    metrics.record_resources(res)
    metrics.download_duration.observe(5400)
    text = metrics.render().decode()
    assert "modelferry_agent_gpus 1.0" in text
    assert 'modelferry_agent_download_duration_seconds_bucket{le="43200.0"} 1.0' in text
    assert 'modelferry_agent_download_duration_seconds_bucket{le="3600.0"} 0.0' in text
    if "networkReceiveBytes" in res:  # /proc/net/dev is there on Linux
        assert 'modelferry_agent_network_bytes{direction="receive"}' in text


def test_gpu_and_network_figures_reach_the_metrics(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.write_text(
        "Inter-|   Receive                            |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n"
        "    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n"
        "  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n"
        "  eth1: 5 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n"
    )
    assert network_bytes(dev) == (1005, 2007)
    assert network_bytes(tmp_path / "absent") is None
    gpu = {"index": 0, "name": "H200", "memoryTotalBytes": 100, "memoryUsedBytes": 25, "utilizationPercent": 40}
    metrics = AgentMetrics()
    metrics.record_resources({"gpus": [gpu], "networkReceiveBytes": 1005, "networkTransmitBytes": 2007})
    text = metrics.render().decode()
    assert 'modelferry_agent_gpu_utilization_ratio{gpu="0"} 0.4' in text
    assert 'modelferry_agent_gpu_memory_bytes{gpu="0",kind="used"} 25.0' in text
    assert 'modelferry_agent_network_bytes{direction="transmit"} 2007.0' in text
