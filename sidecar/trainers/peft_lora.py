"""The built-in ``peft-lora`` runtime: LoRA fine-tuning of a causal LM with transformers + peft.

Run as ``python -m modelferry.sidecar.trainers.peft_lora --model DIR --dataset FILE --output DIR [...]``.
It takes OME-Agent's ``peft_ft.*`` hyperparameters, writes the documented metrics file
(one JSON object per line: ``step``, ``epoch``, metric values) and saves the adapter (and, with
``--merge``, the merged model). ``--build-tiny-model DIR`` writes a tiny Llama built from a config
plus a byte-level tokenizer and a small dataset (tests and ``modelferry demo``; no hub download).

The training loop is a plain torch loop rather than ``transformers.Trainer`` so the metrics file,
early stopping and checkpoints are exactly what the sidecar documents, and so no second MLflow
logger (Trainer's ``report_to``) writes into the run the sidecar owns.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

DEMO_LINES = [
    "modelferry moves large models between buckets and verifies every byte.",
    "a sidecar stages the base model, watches the trainer and ships the adapter.",
    "metrics stream to mlflow in batches and arrive late when the server is down.",
    "every copy ends with a manifest written last so readers know it is whole.",
]


def build_tiny_model(directory: Path, dataset: Path | None = None, seed: int = 0) -> None:
    """A tiny Llama (random weights) with a byte-level BPE tokenizer, saved like a hub model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(DEMO_LINES * 4, trainer=trainer)
    special = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    fast_cls: Any = PreTrainedTokenizerFast  # untyped constructor in transformers 5
    fast: Any = fast_cls(tokenizer_object=tok, **special)
    fast.save_pretrained(str(directory))
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(directory))
    if dataset is not None:
        dataset.parent.mkdir(parents=True, exist_ok=True)
        with dataset.open("w", encoding="utf-8") as fh:
            for i in range(16):
                fh.write(json.dumps({"text": DEMO_LINES[i % len(DEMO_LINES)]}) + "\n")


def load_texts(path: Path) -> list[str]:
    """JSON lines with ``text`` or ``prompt``+``completion`` (OME's format), or plain text lines."""
    texts: list[str] = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"error: {path}:{lineno}: not valid JSON ({exc.msg})") from None
            if "text" in obj:
                texts.append(str(obj["text"]))
            elif "prompt" in obj:
                texts.append(f"{obj['prompt']}{obj.get('completion', '')}")
            else:
                raise SystemExit(f"error: {path}:{lineno}: expected a 'text' or 'prompt'/'completion' field")
        else:
            texts.append(line)
    if not texts:
        raise SystemExit(f"error: dataset {path} holds no examples")
    return texts


class MetricsWriter:
    """Appends one JSON object per line and flushes each, so the sidecar sees it at once."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, sort_keys=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="peft-lora", description=__doc__.split("\n\n")[0])
    p.add_argument("--build-tiny-model", type=Path, help="write a tiny model (and --dataset) and exit")
    p.add_argument("--model", type=Path, help="base model directory (config.json, weights, tokenizer)")
    p.add_argument("--dataset", type=Path, help="training data file (JSON lines)")
    p.add_argument("--output", type=Path, help="where the adapter and metrics go")
    p.add_argument("--metrics-file", type=Path, help="metrics JSON lines [OUTPUT/metrics.jsonl]")
    p.add_argument("--epochs", type=float, default=1.0, help="peft_ft.num_train_epochs")
    p.add_argument("--learning-rate", type=float, default=2e-4, help="peft_ft.learning_rate")
    p.add_argument("--batch-size", type=int, default=4, help="peft_ft.train_batch_size")
    p.add_argument("--early-stopping-patience", type=int, default=0, help="evaluations without improvement; 0 off")
    p.add_argument("--early-stopping-threshold", type=float, default=0.0, help="minimum eval loss improvement")
    p.add_argument("--logging-steps", type=int, default=1, help="peft_ft.log_model_metrics_interval_in_steps")
    p.add_argument("--strategy", choices=("lora", "vanilla"), default="lora", help="vanilla: train the last layers")
    p.add_argument("--n-last-layers", type=int, default=0, help="vanilla: decoder layers trained, the rest frozen")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--max-length", type=int, default=64, help="tokens per example")
    p.add_argument("--checkpoint-steps", type=int, default=0, help="save the adapter every N steps; 0 off")
    p.add_argument("--merge", action="store_true", help="also save the merged model")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.build_tiny_model is None and (args.model is None or args.dataset is None or args.output is None):
        p.error("--model, --dataset and --output are required")
    if args.strategy == "vanilla" and args.n_last_layers < 1:
        p.error("--strategy vanilla needs --n-last-layers of at least 1")
    return args


def freeze_all_but_last(model: Any, n_last: int) -> list[str]:
    """Freeze every parameter except those of the last ``n_last`` decoder layers; returns the trained names."""
    layers = getattr(model.get_decoder(), "layers", None)
    if layers is None or n_last > len(layers):
        count = "no" if layers is None else len(layers)
        raise SystemExit(f"error: n_last_layers {n_last} but the model has {count} decoder layers")
    for param in model.parameters():
        param.requires_grad = False
    for layer in layers[len(layers) - n_last :]:
        for param in layer.parameters():
            param.requires_grad = True
    return [n for n, p in model.named_parameters() if p.requires_grad]


def train(args: argparse.Namespace) -> int:
    """Fine-tune; returns the process exit status."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stop = {"requested": False}

    def _on_term(signum: int, _frame: object) -> None:  # finish the step, save, exit 143
        stop["requested"] = True

    signal.signal(signal.SIGTERM, _on_term)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    metrics = MetricsWriter(args.metrics_file or output / "metrics.jsonl")
    tokenizer: Any = AutoTokenizer.from_pretrained(str(args.model))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(str(args.model))
    if args.strategy == "vanilla":
        trained = freeze_all_but_last(model, args.n_last_layers)
    else:
        lora = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=["q_proj", "v_proj"],
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
        trained = [n for n, p in model.named_parameters() if p.requires_grad]
    texts = load_texts(args.dataset)
    random.shuffle(texts)
    n_eval = max(1, len(texts) // 8) if len(texts) > 1 else 0
    eval_texts, train_texts = texts[:n_eval], texts[n_eval:] or texts

    def batches(items: list[str]) -> list[dict[str, Any]]:
        out = []
        for i in range(0, len(items), args.batch_size):
            enc = tokenizer(
                items[i : i + args.batch_size],
                padding=True,
                truncation=True,
                max_length=args.max_length,
                return_tensors="pt",
            )
            labels = enc["input_ids"].clone()
            labels[enc["attention_mask"] == 0] = -100
            enc["labels"] = labels
            out.append(dict(enc))
        return out

    train_batches, eval_batches = batches(train_texts), batches(eval_texts)
    steps_per_epoch = len(train_batches)
    total_steps = max(1, math.ceil(steps_per_epoch * args.epochs))
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: 1.0 - s / (total_steps + 1))
    start = {
        "event": "start",
        "total_steps": total_steps,
        "train_examples": len(train_texts),
        "strategy": args.strategy,
    }
    print(json.dumps({**start, "trained_parameters": len(trained)}), flush=True)

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            losses = [float(model(**b).loss) for b in eval_batches]
        model.train()
        return sum(losses) / len(losses)

    best, bad_evals, step, started = math.inf, 0, 0, time.monotonic()
    stopped_early = False
    model.train()
    while step < total_steps and not stop["requested"] and not stopped_early:
        for batch in train_batches:
            loss = model(**batch).loss
            loss.backward()
            optim.step()
            sched.step()
            optim.zero_grad()
            step += 1
            epoch = round(step / steps_per_epoch, 4)
            if step % args.logging_steps == 0 or step == total_steps:
                record: dict[str, Any] = {
                    "step": step,
                    "epoch": epoch,
                    "total_steps": total_steps,
                    "loss": round(float(loss.detach()), 6),
                    "learning_rate": sched.get_last_lr()[0],
                }
                if eval_batches:
                    eval_loss = evaluate()
                    record["eval_loss"] = round(eval_loss, 6)
                    if eval_loss < best - args.early_stopping_threshold:
                        best, bad_evals = eval_loss, 0
                    else:
                        bad_evals += 1
                    if args.early_stopping_patience and bad_evals >= args.early_stopping_patience:
                        stopped_early = True
                metrics.write(record)
            if args.checkpoint_steps and step % args.checkpoint_steps == 0:
                model.save_pretrained(str(output / "checkpoints" / f"checkpoint-{step}"))
            if step >= total_steps or stop["requested"] or stopped_early:
                break
    if stop["requested"]:
        model.save_pretrained(str(output / "checkpoints" / f"checkpoint-{step}"))
        metrics.close()
        print(json.dumps({"event": "terminated", "step": step}), flush=True)
        return 143
    adapter = output / ("model" if args.strategy == "vanilla" else "adapter")  # vanilla: the whole model
    model.save_pretrained(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    if args.merge and args.strategy == "lora":
        model.merge_and_unload().save_pretrained(str(output / "merged"))
        tokenizer.save_pretrained(str(output / "merged"))
    summary = {
        "steps": step,
        "total_steps": total_steps,
        "best_eval_loss": None if best == math.inf else round(best, 6),
        "stopped_early": stopped_early,
        "train_seconds": round(time.monotonic() - started, 3),
    }
    (output / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    metrics.close()
    print(json.dumps({"event": "done", **summary}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m modelferry.sidecar.trainers.peft_lora``."""
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never reach for the hub
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*requires_grad.*")
    if args.build_tiny_model is not None:
        build_tiny_model(args.build_tiny_model, args.dataset, seed=args.seed)
        return 0
    try:
        return train(args)
    except ImportError as exc:
        sys.stderr.write(f"error: the peft-lora runtime needs {exc.name}: pip install 'modelferry[train]'\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
