"""A model directory (and an optional LoRA adapter) loaded with transformers, generating on CPU.

One generation runs at a time per process (a CPU generation already uses every core); the HTTP layer
bounds how many requests may wait. Tokens are reported while they are produced through a callback
called from the generating thread, and a request can be cancelled between two tokens.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelferry.errors import PermanentError, UsageError

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 2048


class RequestError(ValueError):
    """A request the model cannot serve (too long, bad parameter): the client gets a 400."""


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters of one request, already validated by the API layer."""

    max_tokens: int | None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


def check_model_dir(path: Path, *, adapter: bool = False) -> Path:
    """The directory, resolved; a usage error (exit 2) naming what is missing and how to fix it."""
    what = "adapter" if adapter else "model"
    marker = "adapter_config.json" if adapter else "config.json"
    if not path.exists():
        raise UsageError(f"{what} directory {path} does not exist", hint=f"Pass a directory holding {marker}")
    if not path.is_dir():
        raise UsageError(f"{what} path {path} is not a directory", hint=f"Pass a directory holding {marker}")
    if not (path / marker).is_file():
        hint = (
            "Point at a PEFT adapter directory (adapter_config.json and adapter weights), e.g. a TrainingRun's adapter/"
            if adapter
            else "Point at a Hugging Face model directory (config.json, weights, tokenizer), e.g. a `modelferry sync` target"
        )
        raise UsageError(f"{path} is not a {what} directory: no {marker}", hint=hint)
    try:
        json.loads((path / marker).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PermanentError(f"{path / marker} is not readable JSON ({exc})", hint="Sync the model again") from None
    return path.resolve()


def chat_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The model's chat template when it has one, else a plain ``role: content`` transcript."""
    if getattr(tokenizer, "chat_template", None):
        text: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*lines, "assistant:"])


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop string (not sent yet)."""
    keep = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                keep = max(keep, n)
                break
    return keep


@dataclass
class _Progress:
    """What one generation has decoded and sent so far."""

    sent: int = 0
    text: str = ""
    stopped: bool = False


class LoadedModel:
    """The model, its tokenizer and the served names (the base, and the adapter when there is one)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        adapter_dir: Path | None = None,
        served_name: str | None = None,
        adapter_name: str | None = None,
    ) -> None:
        self.model_dir = check_model_dir(model_dir)
        self.adapter_dir = check_model_dir(adapter_dir, adapter=True) if adapter_dir else None
        self.name = served_name or self.model_dir.name
        self.adapter_name = (adapter_name or self.adapter_dir.name) if self.adapter_dir else None
        if self.adapter_name == self.name:
            raise UsageError(
                f"the adapter and the base model are both served as {self.name!r}",
                hint="Give one of them another name with --served-model-name or --adapter-name",
            )
        self._lock = threading.Lock()
        self.model, self.tokenizer = self._load()
        config = self.model.config
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or DEFAULT_CONTEXT)

    def _load(self) -> tuple[Any, Any]:
        try:
            import torch  # noqa: F401 - fail here with an install hint rather than deep in transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise UsageError(
                f"modelferry serve needs torch and transformers ({exc.name} is missing)",
                hint="pip install 'modelferry[serve]'",
            ) from None
        try:
            tokenizer: Any = AutoTokenizer.from_pretrained(str(self.model_dir))
            model: Any = AutoModelForCausalLM.from_pretrained(str(self.model_dir))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise PermanentError(
                f"cannot load the model in {self.model_dir}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                hint="Check that the directory holds a complete causal language model (config, weights, tokenizer)",
            ) from None
        if self.adapter_dir is not None:
            try:
                from peft import PeftModel
            except ImportError:
                raise UsageError("serving an adapter needs peft", hint="pip install 'modelferry[serve]'") from None
            try:
                model = PeftModel.from_pretrained(
                    model, str(self.adapter_dir), adapter_name=self.adapter_name or "adapter"
                )
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise PermanentError(
                    f"cannot load the adapter in {self.adapter_dir} on {self.model_dir}: {str(exc).splitlines()[0]}",
                    hint="Serve the adapter on the base model it was trained from",
                ) from None
        model.eval()
        return model, tokenizer

    @property
    def names(self) -> list[str]:
        return [self.name, *([self.adapter_name] if self.adapter_name else [])]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def generate(
        self,
        name: str,
        prompt: str,
        params: GenerationParams,
        *,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """Generate (blocking, in a worker thread); ``on_text`` gets each new piece of text."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        if name not in self.names:
            raise RequestError(f"model {name!r} is not served here (served: {', '.join(self.names)})")
        inputs = self.tokenizer(prompt, return_tensors="pt")
        prompt_len = int(inputs["input_ids"].shape[1])
        room = self.context_length - prompt_len
        if room <= 0:
            raise RequestError(f"the prompt has {prompt_len} tokens; the model's context is {self.context_length}")
        max_tokens = params.max_tokens if params.max_tokens is not None else room
        if max_tokens > room:
            raise RequestError(
                f"prompt ({prompt_len} tokens) plus max_tokens ({max_tokens}) exceeds the context of {self.context_length}"
            )
        tokenizer, stops = self.tokenizer, params.stop
        state = _Progress()

        class Watch(StoppingCriteria):
            """Called after every token: decode, send what is safe, stop on a stop string or cancel."""

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                text = tokenizer.decode(input_ids[0, prompt_len:], skip_special_tokens=True)
                cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                if cut >= 0:
                    text, state.stopped = text[:cut], True
                state.text = text
                # hold back a possible stop string's start, and a character whose bytes are not all there yet
                safe = len(text) if state.stopped else len(text) - held_back(text, stops)
                while safe > 0 and text[safe - 1] == "\ufffd" and not state.stopped:
                    safe -= 1
                if on_text is not None and safe > state.sent:
                    on_text(text[state.sent : safe])
                    state.sent = safe
                done = bool(state.stopped) or (cancel is not None and cancel.is_set())
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

        sample = params.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "do_sample": sample,
            "stopping_criteria": StoppingCriteriaList([Watch()]),
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        }
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        with self._lock, torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            if self.adapter_name is not None and name == self.name:
                with self.model.disable_adapter():
                    out = self.model.generate(**inputs, **kwargs)
            else:
                out = self.model.generate(**inputs, **kwargs)
        new = out[0, prompt_len:]
        count = int(new.shape[0])
        text = state.text
        if on_text is not None and len(text) > state.sent:
            on_text(text[state.sent :])  # the tail held back for a stop string that never came
        eos = tokenizer.eos_token_id
        ended = count > 0 and eos is not None and int(new[-1]) == eos
        reason = "stop" if state.stopped or ended or count < max_tokens else "length"
        return Completion(text=text, prompt_tokens=prompt_len, completion_tokens=count, finish_reason=reason)
