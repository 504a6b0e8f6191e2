"""Safetensors headers read with two ranged reads, and exact parameter counts.

A safetensors file starts with an 8-byte little-endian header length and a JSON
header mapping tensor names to ``{dtype, shape, data_offsets}``. We read only
those bytes (so a 100 GB checkpoint in a bucket costs two small GETs) and count
*logical* parameters: quantized checkpoints pack several weights into one
stored element (GPTQ/AWQ ``qweight`` and compressed-tensors ``weight_packed``
int32 words, bitsandbytes 4-bit uint8 bytes, MLX uint32 words) and carry
auxiliary tensors (scales, zero points, group indices) that are not parameters.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from modelferry.errors import IntegrityError
from modelferry.modelinfo.config import Quantization

#: Refuse headers larger than this (a corrupt length would otherwise make us read gigabytes).
MAX_HEADER = 100 * 1024 * 1024

DTYPE_BYTES: dict[str, float] = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "F4": 0.5,
}

# Suffixes of tensors that describe quantization rather than hold weights.
_AUX_SUFFIXES = (
    ".qzeros",
    ".scales",
    ".g_idx",
    ".biases",  # MLX per-group offsets (MLX linear biases are named .bias)
    ".weight_scale",
    ".weight_scale_inv",
    ".weight_zero_point",
    ".weight_g_idx",
    ".weight_shape",
    ".input_scale",
    ".output_scale",
    ".k_scale",
    ".v_scale",
    ".absmax",
    ".quant_map",
    ".nested_absmax",
    ".nested_quant_map",
    ".SCB",
    ".weight_format",
)

ReadRange = Callable[[int, int], bytes]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    end: int = 0  # end offset in the data section

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class WeightsSummary:
    """Parameters and bytes across all safetensors files of a model."""

    parameters: int = 0
    stored_elements: int = 0
    weights_bytes: int = 0
    tensors: int = 0
    files: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)  # dtype -> parameters held in it
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def dominant_dtype(self) -> str | None:
        return max(self.dtypes, key=lambda d: self.dtypes[d]) if self.dtypes else None


def parse_header(
    read: ReadRange, *, size: int | None = None, where: str = ""
) -> tuple[list[TensorInfo], dict[str, str]]:
    """Tensors and ``__metadata__`` of one file; ``read(offset, length)`` returns bytes."""
    head = read(0, 8) if size is None or size >= 8 else b""
    if len(head) != 8:
        raise IntegrityError(f"{where} is too short to be a safetensors file", obj=where)
    (length,) = struct.unpack("<Q", head)
    if length > MAX_HEADER or (size is not None and 8 + length > size):
        raise IntegrityError(
            f"{where} has an invalid safetensors header length ({length} bytes)",
            obj=where,
            hint="The file is truncated or not a safetensors file; download it again",
        )
    raw = read(8, length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{where} has a corrupt safetensors header: {exc}", obj=where) from exc
    if not isinstance(header, dict):
        raise IntegrityError(f"{where} has a safetensors header that is not an object", obj=where)
    metadata = {str(k): str(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
    tensors = [_tensor(name, spec, where) for name, spec in header.items()]
    if size is not None and tensors:
        end = 8 + length + max(t.end for t in tensors)
        if end > size:
            raise IntegrityError(f"{where} is truncated: tensors end at byte {end}, file has {size}", obj=where)
    return tensors, metadata


def _tensor(name: str, spec: Any, where: str) -> TensorInfo:
    try:
        dtype = str(spec["dtype"])
        shape = tuple(int(d) for d in spec["shape"])
        start, end = (int(x) for x in spec["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"{where}: tensor {name!r} has a malformed entry", obj=where) from exc
    width = DTYPE_BYTES.get(dtype)
    nbytes = end - start
    if width is not None and math.ceil(math.prod(shape) * width) != nbytes:
        raise IntegrityError(
            f"{where}: tensor {name!r} ({dtype} {list(shape)}) spans {nbytes} bytes, expected {math.ceil(math.prod(shape) * width)}",
            obj=where,
        )
    return TensorInfo(name, dtype, shape, nbytes, end)


def logical_parameters(tensor: TensorInfo, quant: Quantization | None) -> int:
    """Parameters a tensor stands for: 0 for auxiliaries, unpacked count for packed weights."""
    name = tensor.name
    if name.endswith(_AUX_SUFFIXES) or ".quant_state." in name:
        return 0
    if quant is None:
        return tensor.elements
    if name.endswith((".qweight", ".weight_packed")) and tensor.dtype in ("I32", "U32"):
        return tensor.elements * quant.packing
    if quant.method == "mlx" and name.endswith(".weight") and tensor.dtype == "U32":
        return tensor.elements * quant.packing
    if quant.method == "bitsandbytes" and quant.bits == 4 and name.endswith(".weight") and tensor.dtype == "U8":
        return tensor.elements * 2
    return tensor.elements


def summarize(files: Iterable[tuple[list[TensorInfo], dict[str, str]]], quant: Quantization | None) -> WeightsSummary:
    """Add up parameters, bytes and the dtype mix over the files of one model."""
    out = WeightsSummary()
    for tensors, metadata in files:
        out.files += 1
        out.metadata.update(metadata)
        for tensor in tensors:
            params = logical_parameters(tensor, quant)
            out.tensors += 1
            out.stored_elements += tensor.elements
            out.weights_bytes += tensor.nbytes
            out.parameters += params
            if params:
                out.dtypes[tensor.dtype] = out.dtypes.get(tensor.dtype, 0) + params
    return out


def human_size(parameters: int) -> str:
    """``22.7M``, ``7.24B``, ``1.2T`` (three significant digits, like model cards)."""
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if parameters >= scale:
            value = parameters / scale
            digits = 2 if value < 10 else 1 if value < 100 else 0
            return f"{value:.{digits}f}".rstrip("0").rstrip(".") + unit
    return str(parameters)
