"""Engine presets: image (pinned default tag), arguments, port, health and metrics paths, adapter loading.

Each preset turns the same facts (where the model and adapter are mounted, the served names, the
port, the tensor-parallel size) into its engine's command line and environment. Paths inside the
pod are fixed (:data:`MODEL_PATH`, :data:`ADAPTER_PATH`); no user string goes through a shell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelferry.controller.api.v1alpha1.modelserver import Engine, ModelServerSpec

MODEL_PATH = "/models/model"
ADAPTER_PATH = "/models/adapter"

# Pinned default images; ``spec.engine.image`` overrides them.
VLLM_IMAGE = "docker.io/vllm/vllm-openai:v0.11.0"
TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.6"
LLAMA_CPP_IMAGE = "ghcr.io/ggml-org/llama.cpp:server-b6700"
LLAMA_CPP_CUDA_IMAGE = "ghcr.io/ggml-org/llama.cpp:server-cuda-b6700"
GPU = "nvidia.com/gpu"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - the engine listens on the pod's address
TMP = "/tmp"  # noqa: S108 - an emptyDir in the pod


@dataclass(frozen=True)
class Facts:
    """What every preset needs to know about one ModelServer."""

    served_name: str
    adapter_name: str | None
    gpus: int
    tensor_parallel: int
    model_file: str = "model.gguf"
    adapter_file: str = "adapter.gguf"


@dataclass(frozen=True)
class EngineCommand:
    """A preset's container: image, command (None: the image's entrypoint), args and env."""

    image: str
    command: list[str] | None
    args: list[str]
    env: list[dict[str, Any]] = field(default_factory=list)
    port: int = 8000
    health_path: str = "/health"
    metrics_path: str = "/metrics"
    root_image: bool = True  # the image's default user is root: the pod picks a non-root UID
    writable_root: bool = True  # the engine writes caches under its install (no read-only root filesystem)


def vllm(f: Facts, image: str | None, port: int) -> EngineCommand:
    args = ["--model", MODEL_PATH, "--served-model-name", f.served_name, "--host", ALL_INTERFACES, "--port", str(port)]
    if f.tensor_parallel > 1:
        args += ["--tensor-parallel-size", str(f.tensor_parallel)]
    if f.adapter_name:
        args += ["--enable-lora", "--lora-modules", f"{f.adapter_name}={ADAPTER_PATH}"]
    env = [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "VLLM_NO_USAGE_STATS", "value": "1"}]
    return EngineCommand(image or VLLM_IMAGE, ["vllm", "serve"], args, env, port=port)


def tgi(f: Facts, image: str | None, port: int) -> EngineCommand:
    args = [
        "--model-id",
        MODEL_PATH,
        "--served-model-name",
        f.served_name,
        "--hostname",
        ALL_INTERFACES,
        "--port",
        str(port),
    ]
    if f.tensor_parallel > 1:
        args += ["--num-shard", str(f.tensor_parallel)]
    env = [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "HUGGINGFACE_HUB_CACHE", "value": f"{TMP}/hf"}]
    if f.adapter_name:
        env.append({"name": "LORA_ADAPTERS", "value": f"{f.adapter_name}={ADAPTER_PATH}"})
    return EngineCommand(image or TGI_IMAGE, None, args, env, port=port)


def llama_cpp(f: Facts, image: str | None, port: int) -> EngineCommand:
    args = [
        "--model",
        f"{MODEL_PATH}/{f.model_file}",
        "--alias",
        f.served_name,
        "--host",
        ALL_INTERFACES,
        "--port",
        str(port),
    ]
    args += ["--metrics"]  # /metrics is off unless asked for
    if f.gpus:
        args += ["--n-gpu-layers", "999"]
    if f.adapter_name:
        args += ["--lora", f"{ADAPTER_PATH}/{f.adapter_file}"]
    default = LLAMA_CPP_CUDA_IMAGE if f.gpus else LLAMA_CPP_IMAGE
    return EngineCommand(image or default, None, args, [], port=port)


def transformers(f: Facts, image: str | None, port: int, default_image: str) -> EngineCommand:
    args = ["serve", MODEL_PATH, "--host", ALL_INTERFACES, "--port", str(port), "--served-model-name", f.served_name]
    if f.adapter_name:
        args += ["--adapter", ADAPTER_PATH, "--adapter-name", f.adapter_name]
    env = [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "MODELFERRY_LOG_FORMAT", "value": "json"}]
    return EngineCommand(image or default_image, ["modelferry"], args, env, port=port, root_image=False)


def custom(f: Facts, engine: Engine, port: int) -> EngineCommand:
    """A custom image: its own command and args; the paths and names arrive as environment variables."""
    env = [
        {"name": "MODEL_PATH", "value": MODEL_PATH},
        {"name": "SERVED_MODEL_NAME", "value": f.served_name},
        {"name": "PORT", "value": str(port)},
    ]
    if f.adapter_name:
        env += [{"name": "ADAPTER_PATH", "value": ADAPTER_PATH}, {"name": "ADAPTER_NAME", "value": f.adapter_name}]
    if engine.image is None:  # the CRD's rule: a custom engine needs an image
        raise ValueError("a custom engine needs spec.engine.image")
    return EngineCommand(
        engine.image,
        list(engine.command) or None,
        [],
        env,
        port=port,
        health_path=engine.health_path or "/health",
        metrics_path=engine.metrics_path or "/metrics",
    )


DEFAULT_PORTS = {"vllm": 8000, "tgi": 8080, "llama-cpp": 8080, "transformers": 8000, "custom": 8000}


def gpu_count(resources: dict[str, Any]) -> int:
    """``nvidia.com/gpu`` from the limits (else the requests); 0 when absent or not a whole number."""
    for part in ("limits", "requests"):
        value = (resources.get(part) or {}).get(GPU)
        if value is not None:
            try:
                return max(0, int(str(value)))
            except ValueError:
                return 0
    return 0


def engine_command(spec: ModelServerSpec, facts: Facts, default_image: str) -> EngineCommand:
    """The preset of ``spec.engine.type`` with the user's image, port and paths applied."""
    engine = spec.engine
    kind = engine.type
    port = engine.port or DEFAULT_PORTS.get(kind, 8000)
    image = engine.image or None
    if kind == "vllm":
        out = vllm(facts, image, port)
    elif kind == "tgi":
        out = tgi(facts, image, port)
    elif kind == "llama-cpp":
        out = llama_cpp(facts, image, port)
    elif kind == "transformers":
        out = transformers(facts, image, port, default_image)
    elif kind == "custom":
        return custom(facts, engine, port)
    else:
        raise ValueError(f"unknown engine type {kind!r}")
    overrides: dict[str, Any] = {}
    if engine.health_path:
        overrides["health_path"] = engine.health_path
    if engine.metrics_path:
        overrides["metrics_path"] = engine.metrics_path
    if overrides:
        return EngineCommand(**{**out.__dict__, **overrides})
    return out
