"""TensorRT-LLM shape filtering: download only the engines built for this node's GPUs.

TensorRT-LLM engines are compiled for one GPU model and count, and repositories
keep one folder per shape (``GPU.H100.8/rank0.engine``, ``BM.GPU.A100-v2.8/...``).
A path is shape-specific when one of its folders names a shape; those folders
are kept only when they name this node's shape, every other file is kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

_SHAPE_RE = re.compile(r"^(?:(?:BM|VM)\.)?GPU\.[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*(?:\.\d+)?$", re.IGNORECASE)
_GPU_MODEL_RE = re.compile(
    r"\b(A10G?|A100|A30|A40|H100|H200|H20|L4|L40S?|B100|B200|GB200|MI250X?|MI300X|T4|V100)\b", re.I
)
TRTLLM_NAMES = ("tensorrtllm", "tensorrt-llm", "trtllm")


def is_shape_dir(segment: str) -> bool:
    return bool(_SHAPE_RE.match(segment))


def _norm(shape: str) -> str:
    return shape.strip().upper()


def shape_matches(segment: str, shape: str) -> bool:
    """``GPU.H100.8`` matches ``BM.GPU.H100.8`` and vice versa (the BM./VM. prefix is the instance kind)."""
    a, b = _norm(segment), _norm(shape)
    strip = re.compile(r"^(?:BM|VM)\.")
    return a == b or strip.sub("", a) == strip.sub("", b)


def excluded_shape_dirs(paths: Iterable[str], shape: str | None) -> list[str]:
    """Exclude patterns (``dir/``) for every shape folder that is not this node's shape."""
    out: set[str] = set()
    for path in paths:
        parts = path.split("/")[:-1]
        for i, segment in enumerate(parts):
            if is_shape_dir(segment) and (shape is None or not shape_matches(segment, shape)):
                out.add("/".join(parts[: i + 1]) + "/")
                break
    return sorted(out)


def is_trtllm(obj: Mapping[str, Any]) -> bool:
    """A TensorRT-LLM model by its spec (modelFormat / modelFramework name)."""
    spec = obj.get("spec") or {}
    names = [str((spec.get(k) or {}).get("name", "")).lower() for k in ("modelFormat", "modelFramework")]
    return any(n in TRTLLM_NAMES for n in names)


def shape_from_labels(labels: Mapping[str, str]) -> str | None:
    """The shape from node labels: an OCI instance type, or GPU feature discovery's product and count."""
    instance = labels.get("node.kubernetes.io/instance-type") or labels.get("beta.kubernetes.io/instance-type") or ""
    if is_shape_dir(instance):
        return instance
    product = labels.get("nvidia.com/gpu.product")
    count = labels.get("nvidia.com/gpu.count")
    if product and count:
        found = _GPU_MODEL_RE.search(product.replace("-", " "))
        if found:
            return f"GPU.{found.group(1).upper()}.{count}"
    return None


def shape_from_gpu_names(names: list[str]) -> str | None:
    """``GPU.H100.8`` from NVML device names like ``NVIDIA H100 80GB HBM3``."""
    if not names:
        return None
    found = _GPU_MODEL_RE.search(names[0])
    return f"GPU.{found.group(1).upper()}.{len(names)}" if found else None


def nvml_gpu_names() -> list[str]:
    """Device names via NVML; empty when there is no driver or library (CPU nodes, tests)."""
    try:
        import pynvml  # nvidia-ml-py, optional (mypy: ignore_missing_imports in pyproject)
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded ...: no GPUs visible here
        return []
    try:
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names
    finally:
        pynvml.nvmlShutdown()


def detect_shape(alias: str | None, labels: Mapping[str, str], gpu_names: list[str] | None = None) -> str | None:
    """NVML first (what is really there), then the configured alias, then node labels."""
    names = nvml_gpu_names() if gpu_names is None else gpu_names
    shape = shape_from_gpu_names(names) or alias or shape_from_labels(labels)
    log.debug("node GPU shape: %s", shape)
    return shape
