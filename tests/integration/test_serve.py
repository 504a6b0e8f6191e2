"""``modelferry serve`` over real HTTP: the demo's tiny Llama, a LoRA adapter on it, a real aiohttp server.

Most tests run the server on a background thread of this process (one model load for the module);
the CLI tests start ``modelferry serve`` as a child process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelferry.serve.api import ServeApp
from modelferry.serve.model import GenerationParams, LoadedModel
from modelferry.serve.server import BackgroundServer

ROOT = Path(__file__).resolve().parents[2]


def build_adapter(model_dir: Path, out: Path) -> None:
    """A LoRA adapter with non-zero weights (so it changes the answers), saved as a TrainingRun does."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(7)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(str(out))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from modelferry.sidecar.trainers.peft_lora import build_tiny_model

    root = tmp_path_factory.mktemp("serve")
    build_tiny_model(root / "tiny-llama")
    build_adapter(root / "tiny-llama", root / "demo-adapter")
    return root / "tiny-llama", root / "demo-adapter"


@pytest.fixture(scope="module")
def served(models: tuple[Path, Path]) -> Iterator[tuple[str, ServeApp]]:
    model = LoadedModel(models[0], adapter_dir=models[1])
    app = ServeApp(model, max_queue=0)
    with BackgroundServer(app) as server:
        yield server.url, app


def post(url: str, path: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=60, **kw)


def events(url: str, path: str, body: dict[str, Any]) -> list[Any]:
    with httpx.stream("POST", url + path, json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def chat(url: str, model: str, content: str = "say something", **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0, **extra}
    response = post(url, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    return out


def test_models_lists_the_base_and_the_adapter_on_it(served: tuple[str, ServeApp]) -> None:
    url, _ = served
    data = httpx.get(url + "/v1/models").json()["data"]
    assert [(m["id"], m.get("parent")) for m in data] == [("tiny-llama", None), ("demo-adapter", "tiny-llama")]
    assert httpx.get(url + "/health").json()["status"] == "ok"


def test_chat_answers_with_usage_and_the_adapter_changes_the_answer(served: tuple[str, ServeApp]) -> None:
    url, _ = served
    base = chat(url, "tiny-llama", max_tokens=12)
    tuned = chat(url, "demo-adapter", max_tokens=12)
    assert base["object"] == "chat.completion" and base["model"] == "tiny-llama"
    assert base["choices"][0]["message"]["role"] == "assistant"
    assert base["usage"]["completion_tokens"] <= 12
    assert base["usage"]["total_tokens"] == base["usage"]["prompt_tokens"] + base["usage"]["completion_tokens"]
    assert tuned["choices"][0]["message"]["content"] != base["choices"][0]["message"]["content"]
    # greedy decoding is deterministic, and the base answer is unchanged after the adapter ran
    assert chat(url, "tiny-llama", max_tokens=12)["choices"] == base["choices"]


def test_streamed_completion_equals_the_plain_one(served: tuple[str, ServeApp]) -> None:
    url, _ = served
    body = {"model": "demo-adapter", "prompt": "every copy ends with", "max_tokens": 20, "temperature": 0}
    plain = post(url, "/v1/completions", body).json()
    chunks = events(url, "/v1/completions", {**body, "stream": True, "stream_options": {"include_usage": True}})
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == plain["choices"][0]["text"]
    assert "\ufffd" not in text or "\ufffd" in plain["choices"][0]["text"]
    assert chunks[-2]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"] == plain["usage"] and chunks[-1]["choices"] == []


def test_streamed_chat_sends_role_then_content_deltas(served: tuple[str, ServeApp]) -> None:
    url, _ = served
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0}
    chunks = events(url, "/v1/chat/completions", {**body, "stream": True})
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == chat(url, "tiny-llama", "hi", max_tokens=8)["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_stop_string_ends_the_answer_before_it(served: tuple[str, ServeApp]) -> None:
    url, _ = served
    body = {"model": "tiny-llama", "prompt": "a sidecar stages", "max_tokens": 30, "temperature": 0}
    full = post(url, "/v1/completions", body).json()["choices"][0]["text"]
    stop = next(
        full[i : i + 2] for i in range(3, len(full) - 2) if full[i : i + 2].strip() and "\ufffd" not in full[i : i + 2]
    )
    stopped = post(url, "/v1/completions", {**body, "stop": [stop]}).json()["choices"][0]
    assert stopped["text"] == full[: full.find(stop)]
    assert stopped["finish_reason"] == "stop"
    chunks = events(url, "/v1/completions", {**body, "stop": stop, "stream": True})
    assert "".join(c["choices"][0]["text"] for c in chunks) == stopped["text"]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/completions", {"model": "other", "prompt": "x"}, "is not served here"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 1000}, "exceeds the context of 128"),
        ("/v1/completions", {"prompt": "x", "n": 2}, "'n': 1"),
        ("/v1/completions", {"prompt": 5}, "'prompt' must be a string"),
        ("/v1/completions", {"prompt": "x", "temperature": 9}, "'temperature'"),
        ("/v1/chat/completions", {"messages": []}, "'messages' must be a non-empty list"),
        ("/v1/chat/completions", {"messages": [{"role": "root", "content": "x"}]}, "needs a 'role'"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "text parts"),
    ],
)
def test_bad_requests_get_400_with_an_openai_error(
    served: tuple[str, ServeApp], path: str, body: dict[str, Any], message: str
) -> None:
    url, _ = served
    response = post(url, path, body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_body_that_is_not_json_gets_400(served: tuple[str, ServeApp]) -> None:
    url, _ = served
    response = httpx.post(url + "/v1/completions", content=b"{not json", timeout=30)
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


def test_a_full_queue_answers_503_and_the_waiting_request_completes(served: tuple[str, ServeApp]) -> None:
    url, app = served
    result: dict[str, httpx.Response] = {}
    body = {"prompt": "x", "max_tokens": 2}
    running = app.metrics.running
    with app.model._lock:  # the model is busy: the first request holds the only slot, the queue holds none
        worker = threading.Thread(target=lambda: result.setdefault("first", post(url, "/v1/completions", body)))
        worker.start()
        while running._value.get() < 1:
            threading.Event().wait(0.01)
        busy = post(url, "/v1/completions", body)
    worker.join()
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    assert result["first"].status_code == 200
    assert app.metrics.rejected._value.get() >= 1


def test_metrics_count_requests_tokens_and_latency(served: tuple[str, ServeApp]) -> None:
    url, _ = served
    chat(url, "demo-adapter", max_tokens=4)
    text = httpx.get(url + "/metrics").text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"}
    assert samples['modelferry_serve_requests_total{endpoint="chat",model="demo-adapter",status="200"}'] >= 1
    assert samples['modelferry_serve_completion_tokens_total{model="demo-adapter"}'] >= 1
    assert samples['modelferry_serve_request_duration_seconds_count{endpoint="chat"}'] >= 1
    assert samples['modelferry_serve_time_to_first_token_seconds_count{endpoint="chat"}'] >= 1
    assert any(
        k.startswith('modelferry_serve_requests_total{endpoint="completions",model="-",status="400"') for k in samples
    )


def test_a_cancelled_generation_stops_at_the_next_token(served: tuple[str, ServeApp]) -> None:
    _, app = served
    cancel = threading.Event()
    cancel.set()
    done = app.model.generate("tiny-llama", "x", GenerationParams(max_tokens=50, temperature=0), cancel=cancel)
    assert done.completion_tokens == 1


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "modelferry", "serve", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_cli_usage_errors_exit_2_and_name_the_fix(tmp_path: Path, models: tuple[Path, Path]) -> None:
    missing = run_cli(str(tmp_path / "absent"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = run_cli(str(tmp_path / "empty"))
    assert empty.returncode == 2 and "no config.json" in empty.stderr and "Hugging Face model directory" in empty.stderr
    not_adapter = run_cli(str(models[0]), "--adapter", str(models[0]))
    assert not_adapter.returncode == 2 and "no adapter_config.json" in not_adapter.stderr


def test_cli_a_model_that_cannot_load_exits_3(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "model.safetensors").write_bytes(b"\x00" * 16)
    result = run_cli(str(broken))
    assert result.returncode == 3 and "cannot load the model" in result.stderr


def test_cli_serves_the_adapter_over_http_and_stops_on_sigterm(models: tuple[Path, Path]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "modelferry", "serve", str(models[0]), "--adapter", str(models[1]), "--port", "0"]
    argv += ["--served-model-name", "base", "--adapter-name", "tuned"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), (line, proc.stderr.read() if proc.stderr else "")
        url = line.split()[-1]
        answer = chat(url, "tuned", max_tokens=6)
        assert answer["model"] == "tuned" and answer["usage"]["completion_tokens"] >= 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
