"""``modelferry serve MODEL_DIR``: the built-in OpenAI-compatible CPU engine (the ``transformers`` preset)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from modelferry.errors import UsageError

log = logging.getLogger("modelferry.serve")


@click.command("serve")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--adapter", type=click.Path(path_type=Path), default=None, help="A PEFT (LoRA) adapter directory.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 in a pod).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@click.option("--served-model-name", default=None, help="The model's name in requests [the directory's name].")
@click.option("--adapter-name", default=None, help="The adapter's name in requests [its directory's name].")
@click.option(
    "--max-queue",
    type=click.IntRange(0, 10000),
    default=16,
    show_default=True,
    help="Requests that may wait; more get 503.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(1, 1 << 20),
    default=4096,
    show_default=True,
    help="Largest max_tokens accepted.",
)
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="Torch CPU threads [torch's default].")
def serve_command(
    model_dir: Path,
    adapter: Path | None,
    host: str,
    port: int,
    served_model_name: str | None,
    adapter_name: str | None,
    max_queue: int,
    max_tokens: int,
    threads: int | None,
) -> None:
    """Serve a small model on CPU with an OpenAI-compatible API.

    \b
    Routes: /v1/models, /v1/completions, /v1/chat/completions (stream or not), /health, /metrics.
    With --adapter the adapter is served as its own model name on top of the base model.
    Prints "listening on URL" on stdout once the model is loaded; SIGTERM stops it gracefully.

    \b
    Examples:
      modelferry serve ./tiny-llama --adapter ./run/adapter --port 8000
      curl localhost:8000/v1/chat/completions -d '{"model":"adapter","messages":[{"role":"user","content":"hi"}]}'
    """
    try:
        from modelferry.serve.api import ServeApp
        from modelferry.serve.model import LoadedModel
        from modelferry.serve.server import serve_forever
    except ImportError as exc:
        raise UsageError(
            f"modelferry serve needs the serve extra ({exc.name} is missing)", hint="pip install 'modelferry[serve]'"
        ) from None
    for name in (served_model_name, adapter_name):
        if name is not None and not (0 < len(name) <= 256 and name.isprintable()):
            raise UsageError(f"bad served name {name[:40]!r}", hint="Use 1-256 printable characters")
    model = LoadedModel(model_dir, adapter_dir=adapter, served_name=served_model_name, adapter_name=adapter_name)
    if threads:
        import torch

        torch.set_num_threads(threads)
    app = ServeApp(model, max_queue=max_queue, max_tokens=max_tokens)

    def ready(url: str) -> None:
        log.info("serving %s on %s", ", ".join(model.names), url)
        sys.stdout.write(f"listening on {url}\n")
        sys.stdout.flush()

    asyncio.run(serve_forever(app, host, port, ready))
