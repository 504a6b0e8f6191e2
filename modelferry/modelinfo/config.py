"""Metadata from a model's ``config.json``: a pure function over the parsed JSON.

Covers the Transformers conventions (``architectures``, ``model_type``,
``max_position_embeddings``, ``quantization_config``) plus the variants that
vision-language models (``text_config``/``vision_config``), sentence-transformers
embedders and MLX conversions (``quantization`` at the top level) use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TEXT_GENERATION = "TEXT_GENERATION"
TEXT_EMBEDDINGS = "TEXT_EMBEDDINGS"
VISION = "VISION"
TEXT_CLASSIFICATION = "TEXT_CLASSIFICATION"

# Keys that hold the context length, in the order models use them.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "max_seq_len", "n_ctx")
# Encoder families whose bare model is used for embeddings.
_EMBEDDING_TYPES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "mpnet",
    "distilbert",
    "nomic_bert",
    "e5",
    "modernbert",
    "electra",
    "deberta-v2",
}
_GENERATION_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


@dataclass(frozen=True)
class Quantization:
    """How weights are quantized. ``method`` is one of gptq, awq, fp8, bitsandbytes, compressed-tensors, mlx."""

    method: str
    bits: int | None = None
    fmt: str | None = None  # compressed-tensors format, e.g. pack-quantized / float-quantized
    group_size: int | None = None

    @property
    def label(self) -> str:
        """Short human label: ``gptq-int4``, ``fp8``, ``bitsandbytes-nf4`` ..."""
        if self.method == "fp8" or (self.fmt == "float-quantized" and self.bits == 8):
            return "fp8" if self.method == "fp8" else "compressed-tensors-fp8"
        if self.method == "bitsandbytes" and self.fmt:
            return f"bitsandbytes-{self.fmt}"
        if self.bits:
            return f"{self.method}-int{self.bits}"
        return self.method

    @property
    def packing(self) -> int:
        """Logical weights per 32-bit word in packed tensors (1 when not packed)."""
        if self.bits and self.bits < 8:
            return 32 // self.bits
        return 1


@dataclass
class ConfigInfo:
    """What config.json says about a model."""

    architecture: str | None = None
    model_type: str | None = None
    context_length: int | None = None
    capabilities: list[str] = field(default_factory=list)
    quantization: Quantization | None = None
    torch_dtype: str | None = None
    framework: dict[str, str] = field(default_factory=dict)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def context_length(config: dict[str, Any]) -> int | None:
    """The longest input the model accepts, looking into ``text_config`` for multimodal models."""
    for source in (config, config.get("text_config") or {}, config.get("llm_config") or {}):
        if not isinstance(source, dict):
            continue
        for key in _CONTEXT_KEYS:
            value = _int(source.get(key))
            if value:
                return value
    return None


def detect_quantization(config: dict[str, Any]) -> Quantization | None:
    """Quantization from ``quantization_config`` (Transformers) or ``quantization`` (MLX)."""
    qc = config.get("quantization_config") or (config.get("text_config") or {}).get("quantization_config")
    if isinstance(qc, dict):
        method = str(qc.get("quant_method") or "").lower()
        if method in ("gptq", "awq"):
            return Quantization(method, _int(qc.get("bits")) or _int(qc.get("w_bit")) or 4, None, _group(qc))
        if method in ("fp8", "fbgemm_fp8"):
            return Quantization("fp8", 8, qc.get("fmt"), None)
        if method == "bitsandbytes" or qc.get("load_in_4bit") or qc.get("load_in_8bit"):
            if qc.get("load_in_4bit") or qc.get("_load_in_4bit"):
                return Quantization("bitsandbytes", 4, str(qc.get("bnb_4bit_quant_type") or "nf4"))
            return Quantization("bitsandbytes", 8, "int8")
        if method == "compressed-tensors":
            return _compressed_tensors(qc)
        if method:
            return Quantization(method, _int(qc.get("bits")))
    mlx = config.get("quantization")
    if isinstance(mlx, dict) and ("bits" in mlx or "group_size" in mlx):
        return Quantization("mlx", _int(mlx.get("bits")) or 4, None, _int(mlx.get("group_size")))
    return None


def _group(qc: dict[str, Any]) -> int | None:
    return _int(qc.get("group_size")) or _int(qc.get("q_group_size"))


def _compressed_tensors(qc: dict[str, Any]) -> Quantization:
    fmt = qc.get("format")
    bits: int | None = None
    group: int | None = None
    groups = qc.get("config_groups") or {}
    for spec in groups.values() if isinstance(groups, dict) else []:
        weights = spec.get("weights") if isinstance(spec, dict) else None
        if isinstance(weights, dict):
            bits = _int(weights.get("num_bits")) or bits
            group = _int(weights.get("group_size")) or group
            if weights.get("type") == "float" and fmt is None:
                fmt = "float-quantized"
            if spec.get("format"):
                fmt = spec["format"]
    return Quantization("compressed-tensors", bits, fmt, group)


def detect_capabilities(config: dict[str, Any], *, sentence_transformers: bool = False) -> list[str]:
    """TEXT_GENERATION, TEXT_EMBEDDINGS, VISION, TEXT_CLASSIFICATION from the architecture."""
    archs = [str(a) for a in config.get("architectures") or []]
    model_type = str(config.get("model_type") or "")
    caps: list[str] = []
    if any(a.endswith(_GENERATION_SUFFIXES) for a in archs):
        caps.append(TEXT_GENERATION)
    if "vision_config" in config or any("Vision" in a or "VL" in a or "Llava" in a for a in archs):
        caps.append(VISION)
    if any(a.endswith("ForSequenceClassification") for a in archs):
        caps.append(TEXT_CLASSIFICATION)
    bare_encoder = model_type in _EMBEDDING_TYPES and (
        not archs or any(a.endswith(("Model", "ForMaskedLM")) for a in archs)
    )
    if sentence_transformers or bare_encoder:
        caps.append(TEXT_EMBEDDINGS)
    return caps


def parse_config(config: dict[str, Any], *, sentence_transformers: bool = False) -> ConfigInfo:
    """Everything we can tell from config.json; missing keys stay None."""
    archs = config.get("architectures") or []
    info = ConfigInfo(
        architecture=str(archs[0]) if archs else None,
        model_type=str(config["model_type"]) if config.get("model_type") else None,
        context_length=context_length(config),
        capabilities=detect_capabilities(config, sentence_transformers=sentence_transformers),
        quantization=detect_quantization(config),
        torch_dtype=_dtype(config),
    )
    version = config.get("transformers_version")
    if version:
        info.framework = {"name": "transformers", "version": str(version)}
    return info


def _dtype(config: dict[str, Any]) -> str | None:
    for source in (config, config.get("text_config") or {}):
        if isinstance(source, dict):
            value = source.get("torch_dtype") or source.get("dtype")
            if isinstance(value, str):
                return value
    return None
