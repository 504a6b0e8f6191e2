"""Model metadata: config.json parsing and safetensors headers (see :func:`inspect_store`)."""

from modelferry.modelinfo.config import ConfigInfo, Quantization, parse_config
from modelferry.modelinfo.metadata import ModelMetadata, inspect_store
from modelferry.modelinfo.safetensors import WeightsSummary, human_size, parse_header, summarize

__all__ = [
    "ConfigInfo",
    "ModelMetadata",
    "Quantization",
    "WeightsSummary",
    "human_size",
    "inspect_store",
    "parse_config",
    "parse_header",
    "summarize",
]
