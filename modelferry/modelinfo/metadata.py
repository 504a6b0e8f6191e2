"""Model metadata for any store: config.json plus safetensors headers, read with ranged reads."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from modelferry.errors import IntegrityError
from modelferry.modelinfo.config import ConfigInfo, Quantization, parse_config
from modelferry.modelinfo.safetensors import WeightsSummary, human_size, parse_header, summarize
from modelferry.storage.base import MANIFEST_DIR, ObjectInfo, Store

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
#: Runtime overhead on top of the weights (activations, CUDA context, allocator slack); KV cache not included.
RUNTIME_OVERHEAD = 0.20
_DTYPE_QUANT = {"F8_E4M3": "fp8", "F8_E5M2": "fp8"}


@dataclass
class ModelMetadata:
    """What we know about one model directory or prefix."""

    architecture: str | None = None
    model_type: str | None = None
    context_length: int | None = None
    capabilities: list[str] = field(default_factory=list)
    quantization: Quantization | None = None
    framework: dict[str, str] = field(default_factory=dict)
    format: str | None = None
    parameters: int | None = None
    weights_bytes: int | None = None
    dtypes: dict[str, int] = field(default_factory=dict)
    files: int = 0
    total_bytes: int = 0
    has_config: bool = False

    @property
    def parameter_size(self) -> str | None:
        return human_size(self.parameters) if self.parameters else None

    @property
    def memory_estimate_bytes(self) -> int | None:
        """Bytes of accelerator memory to load the weights, with runtime overhead."""
        if self.weights_bytes is None:
            return None
        return int(self.weights_bytes * (1 + RUNTIME_OVERHEAD))

    def to_dict(self) -> dict[str, Any]:
        """JSON form, camelCase like the BaseModel spec and the OME ConfigMap entries."""
        out: dict[str, Any] = {
            "modelArchitecture": self.architecture,
            "modelType": self.model_type,
            "maxTokens": self.context_length,
            "modelCapabilities": self.capabilities,
            "modelFramework": self.framework or None,
            "modelFormat": {"name": self.format} if self.format else None,
            "modelParameterSize": self.parameter_size,
            "parameters": self.parameters,
            "weightsBytes": self.weights_bytes,
            "memoryEstimateBytes": self.memory_estimate_bytes,
            "dtypes": self.dtypes or None,
            "files": self.files,
            "totalBytes": self.total_bytes,
        }
        if self.quantization:
            out["quantization"] = self.quantization.label
            out["quantizationDetail"] = {
                k: v
                for k, v in {
                    "method": self.quantization.method,
                    "bits": self.quantization.bits,
                    "format": self.quantization.fmt,
                    "groupSize": self.quantization.group_size,
                }.items()
                if v is not None
            }
        return {k: v for k, v in out.items() if v not in (None, [], {})}


def detect_format(paths: list[str]) -> str | None:
    """safetensors, gguf, pytorch, onnx, tensorrt-llm or None."""
    names = [p.rsplit("/", 1)[-1] for p in paths]
    if any(n.endswith(".engine") for n in names):
        return "tensorrt-llm"
    if any(n.endswith(".safetensors") for n in names):
        return "safetensors"
    if any(n.endswith(".gguf") for n in names):
        return "gguf"
    if any(n.endswith((".bin", ".pt", ".pth")) for n in names):
        return "pytorch"
    if any(n.endswith(".onnx") for n in names):
        return "onnx"
    return None


def _weight_files(files: list[ObjectInfo]) -> list[ObjectInfo]:
    # Top-level and nested safetensors (some repos keep variants in folders); never our own state.
    return sorted(
        (f for f in files if f.path.endswith(".safetensors") and not f.path.startswith(MANIFEST_DIR + "/")),
        key=lambda f: f.path,
    )


def read_weights(store: Store, files: list[ObjectInfo], quant: Quantization | None) -> WeightsSummary:
    """Parse every safetensors header with two ranged reads per file."""
    parsed = []
    for info in _weight_files(files):

        def read(offset: int, length: int, info: ObjectInfo = info) -> bytes:
            return b"".join(store.read(info.path, offset, length, info=info))

        parsed.append(parse_header(read, size=info.size, where=str(store.uri.child(info.path))))
    return summarize(parsed, quant)


def inspect_store(store: Store, *, weights: bool = True, config: bool = True) -> ModelMetadata:
    """Metadata of the model under ``store``; ``config=False`` honours the skip-config-parsing annotation."""
    files = [f for f in store.list() if not f.path.startswith(MANIFEST_DIR + "/")]
    paths = [f.path for f in files]
    meta = ModelMetadata(files=len(files), total_bytes=sum(f.size for f in files), format=detect_format(paths))
    info = ConfigInfo()
    if config and CONFIG_NAME in paths:
        raw = store.read_bytes(CONFIG_NAME) or b"{}"
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IntegrityError(
                f"{store.uri.child(CONFIG_NAME)} is not valid JSON: {exc}",
                obj=str(store.uri.child(CONFIG_NAME)),
                hint="Fix the file or set the annotation modelferry.io/skip-config-parsing: 'true'",
            ) from exc
        if not isinstance(body, dict):
            raise IntegrityError(f"{store.uri.child(CONFIG_NAME)} is not a JSON object", obj=CONFIG_NAME)
        st = "modules.json" in paths or "config_sentence_transformers.json" in paths
        info = parse_config(body, sentence_transformers=st)
        meta.has_config = True
    meta.architecture = info.architecture
    meta.model_type = info.model_type
    meta.context_length = info.context_length
    meta.capabilities = info.capabilities
    meta.quantization = info.quantization
    meta.framework = info.framework
    if weights and meta.format == "safetensors":
        summary = read_weights(store, files, info.quantization)
        meta.parameters = summary.parameters
        meta.weights_bytes = summary.weights_bytes
        meta.dtypes = summary.dtypes
        dominant = summary.dominant_dtype
        if meta.quantization is None and dominant in _DTYPE_QUANT:
            meta.quantization = Quantization(_DTYPE_QUANT[dominant], 8)
        if not meta.framework and summary.metadata.get("format") == "mlx":
            meta.framework = {"name": "mlx"}
    return meta
