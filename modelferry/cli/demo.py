"""``modelferry demo``: sync -> fine-tune -> serve on loopback, no network, in about a minute.

Embedded S3 (moto) and MLflow (sqlite), a tiny Llama and dataset, a verified sync into the bucket,
LoRA fine-tuning under the sidecar with metrics streamed to MLflow, the adapter uploaded back, then
the adapter served on the synced base model by ``modelferry serve`` and asked one chat question.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from modelferry.cli.demo_display import DemoDisplay, human_bytes
from modelferry.errors import ModelferryError, UsageError

log = logging.getLogger("modelferry.demo")

BUCKET = "modelferry-demo"
ACCESS_KEY = "demo"
SECRET_KEY = "demo-secret"  # noqa: S105 - a throwaway key for the loopback moto server
ADAPTER_NAME = "demo-adapter"
QUESTION = "What does the sidecar do?"
NEEDED = {
    "torch": "train",
    "transformers": "train",
    "peft": "train",
    "mlflow": "sidecar",
    "watchfiles": "sidecar",
    "moto": "moto[server]",
    "uvicorn": "sidecar",
    "aiohttp": "serve",
    "prometheus_client": "serve",
}


def missing_packages() -> list[str]:
    """Extras to install for the demo (empty when everything is there)."""
    return sorted({extra for mod, extra in NEEDED.items() if importlib.util.find_spec(mod) is None})


def _credentials(endpoint: str) -> Any:
    from modelferry.settings import Credentials, S3Credentials

    return Credentials(
        s3=S3Credentials(
            endpoint_url=endpoint,
            region="us-east-1",
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            addressing_style="path",
        )
    )


def _warm_mlflow(url: str) -> None:
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(url).search_experiments(max_results=1)
    except Exception as exc:  # only a warm-up: the sidecar reports real trouble
        log.debug("MLflow warm-up failed: %s", exc)


def run_demo(
    workdir: Path,
    *,
    keep: bool,
    epochs: float,
    echo: Callable[[str], None],
    inspect: Callable[[dict[str, Any]], None] | None = None,
    on_records: Callable[[list[Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the demo in ``workdir``; returns the summary. The servers stop when it returns.

    ``echo`` gets one line per step, ``on_records`` every metric report of the trainer as it comes;
    ``inspect`` is called with the summary while the servers are still up (tests look around there).
    """
    import boto3
    from moto.server import ThreadedMotoServer

    from modelferry.settings import TransferSettings
    from modelferry.sidecar.embedded import EmbeddedMlflow
    from modelferry.sidecar.runner import Runner
    from modelferry.sidecar.settings import LifecycleSettings, MlflowSettings, SidecarSettings
    from modelferry.sidecar.staging import copy_tree
    from modelferry.uri import parse_uri

    started = time.monotonic()
    s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3_server.start()
    host, port = s3_server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    mlflow = EmbeddedMlflow(workdir / "mlflow")
    stack = contextlib.ExitStack()
    try:
        mlflow.start()
        echo(f"S3 (moto) on {endpoint}, MLflow on {mlflow.url}")
        # The server creates its database on the first request: warm it while the model is built.
        warm = threading.Thread(target=_warm_mlflow, args=(mlflow.url,), daemon=True)
        warm.start()
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        client.create_bucket(Bucket=BUCKET)
        model_dir, dataset = workdir / "tiny-llama", workdir / "dataset" / "train.jsonl"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "modelferry.sidecar.trainers.peft_lora",
                "--build-tiny-model",
                str(model_dir),
                "--dataset",
                str(dataset),
            ],
            check=True,
            capture_output=True,
        )
        creds = _credentials(endpoint)
        transfer = TransferSettings(concurrency=4)
        from modelferry.settings import Credentials

        model_uri, data_uri = f"s3://{BUCKET}/models/tiny-llama", f"s3://{BUCKET}/datasets/demo"
        echo(f"built a tiny Llama and a dataset in {workdir}")
        synced = copy_tree(parse_uri(str(model_dir)), parse_uri(model_uri), Credentials(), creds, transfer)
        copy_tree(parse_uri(str(dataset.parent)), parse_uri(data_uri), Credentials(), creds, transfer)
        echo(
            f"synced the model to {model_uri}: {synced.files_copied} files, {human_bytes(synced.bytes_copied)} "
            f"in {synced.elapsed_s:.1f} s, sha256 verified, manifest written last"
        )
        output_uri = f"s3://{BUCKET}/runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
        settings = SidecarSettings(
            workspace=workdir / "workspace",
            runtime="peft-lora",
            base_model_uri=model_uri,
            dataset_uri=f"{data_uri}/train.jsonl",
            output_uri=output_uri,
            hyperparameters={"num_train_epochs": epochs, "learning_rate": 0.01, "train_batch_size": 4, "lora_r": 8},
            mlflow=MlflowSettings(tracking_uri=mlflow.url, experiment_name="modelferry-demo", run_name="demo"),
            lifecycle=LifecycleSettings(stall_timeout=120),
            source=creds,
            target=creds,
            transfer=transfer,
        )
        echo("fine-tuning with peft-lora under the sidecar (metrics stream to MLflow):")
        result = Runner(settings, on_records=on_records).run()
        if result.exit_code:
            raise ModelferryError(
                f"the demo training failed: {result.message}", hint=f"See {workdir}/workspace/.modelferry/trainer.log"
            )
        prefix = output_uri.removeprefix(f"s3://{BUCKET}/") + "/"
        objects = sorted(
            o["Key"][len(prefix) :] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        )
        adapter_files = sum(1 for key in objects if key.startswith("adapter/"))
        echo(f"uploaded the adapter to {output_uri}/adapter/ ({adapter_files} files) with the run's logs and metrics")
        server = stack.enter_context(_serve(workdir, model_uri, f"{output_uri}/adapter", creds, transfer))
        answer = _ask(server.url, ADAPTER_NAME)
        echo(f"modelferry serve answers on {server.url}/v1 (the adapter on the synced base model)")
        from mlflow.tracking import MlflowClient

        run = MlflowClient(mlflow.url).get_run(result.mlflow_run_id or "")
        summary = {
            "mlflow_url": mlflow.url,
            "mlflow_run": f"{mlflow.url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}",
            "mlflow_run_id": result.mlflow_run_id,
            "metrics": run.data.metrics,
            "s3_endpoint": endpoint,
            "s3_access_key": ACCESS_KEY,
            "output_uri": output_uri,
            "objects": objects,
            "adapter_files": adapter_files,
            "manifest_uri": f"{output_uri}/.modelferry/manifest.json",
            "steps": result.progress.get("step"),
            "mlflow_delivery": result.mlflow,
            "serve_url": f"{server.url}/v1",
            "served_models": server.serve_app.model.names,
            "question": QUESTION,
            "answer": answer,
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        if keep:
            summary["kept"] = True
        if inspect is not None:
            inspect(summary)
        return summary
    finally:
        stack.close()  # the model server
        mlflow.stop()  # with --keep, ``inspect`` held them up until Ctrl-C
        s3_server.stop()


def _serve(workdir: Path, model_uri: str, adapter_uri: str, creds: Any, transfer: Any) -> Any:
    """Sync the base model and the adapter out of the bucket (verified) and serve them on loopback."""
    from modelferry.serve.api import ServeApp
    from modelferry.serve.model import LoadedModel
    from modelferry.serve.server import BackgroundServer
    from modelferry.settings import Credentials
    from modelferry.sidecar.staging import copy_tree
    from modelferry.uri import parse_uri

    local = workdir / "serve"
    for uri, name in ((model_uri, "tiny-llama"), (adapter_uri, ADAPTER_NAME)):
        copy_tree(parse_uri(uri), parse_uri(str(local / name)), creds, Credentials(), transfer)
    model = LoadedModel(local / "tiny-llama", adapter_dir=local / ADAPTER_NAME)
    return BackgroundServer(ServeApp(model))


def _ask(url: str, model: str) -> str:
    """One chat request over HTTP, as any OpenAI client sends it."""
    import httpx

    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24, "temperature": 0}
    try:
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ModelferryError(f"the demo's model server did not answer: {exc}") from None
    return str(response.json()["choices"][0]["message"]["content"])


@click.command("demo")
@click.option("--keep", is_flag=True, help="Keep S3, MLflow and the model server up (Ctrl-C stops them).")
@click.option("--workdir", default=None, help="Work in this directory and keep it [a temporary one, removed].")
@click.option("--epochs", type=float, default=3.0, show_default=True, help="Training epochs.")
@click.option("--json", "json_output", is_flag=True, help="Print the summary as JSON on stdout.")
def demo_command(keep: bool, workdir: str | None, epochs: float, json_output: bool) -> None:
    """Sync, fine-tune and serve a tiny model on loopback: S3 + MLflow + modelferry serve, no network.

    \b
    Needs the training extras, installed from a checkout:  pip install -e '.[demo]'
    """
    missing = missing_packages()
    if missing:
        extras = sorted(m for m in missing if not m.startswith("moto"))
        parts = [f"'modelferry[{','.join(extras)}]'"] if extras else []
        parts += [m for m in missing if m.startswith("moto")]
        raise UsageError("the demo needs the training extras", hint=f"pip install {' '.join(parts)}")
    display = DemoDisplay(json_output=json_output)
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="modelferry-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    out = sys.stdout  # the result goes here; the run's own chatter goes to <workdir>/demo.log

    def show(summary: dict[str, Any], *, up: bool) -> None:
        if json_output:
            click.echo(json.dumps(summary, indent=2, default=str), file=out)
            return
        loss = summary["metrics"].get("loss")
        lines = [
            "",
            f"done in {summary['elapsed_s']} s: {summary['steps']} training steps, final loss {loss}",
            f"  adapter:      {summary['output_uri']}/adapter/  ({summary['adapter_files']} files)",
            f"  manifest:     {summary['manifest_uri']}  (written last: the upload is whole)",
            f"  asked:        {summary['question']}",
            f"  answer:       {summary['answer']!r}  (a tiny model tuned for seconds: expect babble)",
        ]
        links = [
            f"  MLflow run:   {summary['mlflow_run']}",
            f"  S3 endpoint:  {summary['s3_endpoint']}  (keys {ACCESS_KEY} / {SECRET_KEY})",
            f"  served at:    {summary['serve_url']}  (models: {', '.join(summary['served_models'])})",
        ]
        if up:
            lines += ["these answer until Ctrl-C:", *links]
        else:
            lines += [
                "MLflow, S3 and the model server have stopped; run `modelferry demo --keep` to keep them up and open",
                "the MLflow run, browse the bucket and send your own requests.",
            ]
            if not workdir:
                lines.append("The work directory was temporary and is removed; `--workdir DIR` keeps it.")
        for line in lines:
            click.echo(line, file=out)

    def hold(summary: dict[str, Any]) -> None:
        """--keep: show where to look while the servers are still up, until Ctrl-C."""
        show(summary, up=True)
        done = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: done.set())
        while not done.wait(3600):
            pass

    try:
        with display.quiet(root):
            summary = run_demo(
                root,
                keep=keep,
                epochs=epochs,
                echo=display.say,
                inspect=hold if keep else None,
                on_records=display.training,
            )
        if not keep:
            show(summary, up=False)
    finally:
        if not workdir:
            shutil.rmtree(root, ignore_errors=True)
