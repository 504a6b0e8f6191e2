"""Pure parts of the sidecar: metric parsing, tails, lifecycle decisions, runtimes, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelferry.errors import UsageError
from modelferry.sidecar.lifecycle import EarlyStopping, Verdict, Watchdog
from modelferry.sidecar.metrics import (
    JsonLinesTail,
    MetricRecord,
    Progress,
    TrainerStateReader,
    parse_line,
    record_from,
)
from modelferry.sidecar.settings import LifecycleSettings, MlflowSettings
from modelferry.sidecar.staging import failed_uri, last_checkpoint
from modelferry.sidecar.supervisor import exit_status
from modelferry.sidecar.trainer_command import find_dataset, runtime_command


def test_parse_line_takes_numeric_fields_and_skips_the_rest() -> None:
    rec = parse_line('{"step": 3, "epoch": 0.5, "loss": 1.25, "note": "x", "ok": true, "nan": NaN, "total_steps": 9}')
    assert rec is not None
    assert rec.step == 3
    assert rec.values == {"epoch": 0.5, "loss": 1.25}
    assert rec.total_steps == 9
    assert parse_line("Epoch 1/3 loss=1.2") is None
    assert parse_line('{"loss": 1.0}') is None  # no step
    assert parse_line('{"step": 1}') is None  # no metric
    assert parse_line("{broken") is None
    assert record_from({"step": True, "loss": 1}) is None


def test_timestamps_in_seconds_become_milliseconds() -> None:
    rec = record_from({"step": 1, "loss": 2.0, "timestamp": 1700000000.5})
    assert rec is not None and rec.timestamp_ms == 1700000000500


def test_json_lines_tail_waits_for_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    tail = JsonLinesTail(path)
    assert tail.read() == []  # not there yet
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    assert [r.step for r in tail.read()] == [1]
    with path.open("a") as fh:
        fh.write('ss": 0.5}\n')
    [rec] = tail.read()
    assert (rec.step, rec.values) == (2, {"loss": 0.5})
    assert tail.read() == []


def test_trainer_state_reader_yields_each_log_entry_once(tmp_path: Path) -> None:
    path = tmp_path / "trainer_state.json"
    reader = TrainerStateReader(path)
    path.write_text(json.dumps({"max_steps": 10, "log_history": [{"step": 5, "loss": 2.0, "epoch": 0.5}]}))
    [rec] = reader.read()
    assert (rec.step, rec.total_steps) == (5, 10)
    path.write_text("{half")  # caught mid-write
    assert reader.read() == []
    state = {"max_steps": 10, "log_history": [{"step": 5, "loss": 2.0}, {"step": 10, "eval_loss": 1.0}]}
    path.write_text(json.dumps(state))
    assert [r.step for r in reader.read()] == [10]


def test_progress_reports_percent_and_eta() -> None:
    p = Progress(started=100.0)
    p.update(MetricRecord(5, {"loss": 1.0}, 0, total_steps=20), now=110.0)
    d = p.to_dict(now=110.0)
    assert d["percent"] == 25.0
    assert d["etaSeconds"] == 30.0
    assert d["metrics"] == {"loss": 1.0}


def rec(step: int, **values: float) -> MetricRecord:
    return MetricRecord(step, dict(values), 0)


def test_early_stopping_patience_and_threshold() -> None:
    es = EarlyStopping("eval_loss", patience=2, threshold=0.1)
    assert not es.observe(rec(1, eval_loss=1.0))
    assert not es.observe(rec(2, eval_loss=0.95))  # within threshold: no improvement (1 bad)
    assert not es.observe(rec(3, loss=5.0))  # other metric: ignored
    assert es.observe(rec(4, eval_loss=0.99))  # 2 bad
    off = EarlyStopping("eval_loss", patience=0, threshold=0)
    assert not any(off.observe(rec(i, eval_loss=float(i))) for i in range(10))


def test_watchdog_stall_and_timeout() -> None:
    dog = Watchdog(LifecycleSettings(stall_timeout=10, timeout=100), started=0.0)
    assert dog.check(5.0) is Verdict.CONTINUE
    assert dog.check(11.0) is Verdict.STALLED
    dog.activity(11.0)
    assert dog.check(20.0) is Verdict.CONTINUE
    assert dog.check(101.0) is Verdict.TIMEOUT
    early = Watchdog(LifecycleSettings(early_stopping_patience=1), started=0.0)
    assert early.observe(rec(1, eval_loss=1.0), 1.0) is Verdict.CONTINUE
    assert early.observe(rec(2, eval_loss=2.0), 2.0) is Verdict.EARLY_STOP


def test_exit_status_follows_the_shell_convention() -> None:
    assert exit_status(0) == 0
    assert exit_status(1) == 1
    assert exit_status(-9) == 137
    assert exit_status(-15) == 143


def test_runtime_command_maps_ome_and_camel_case_hyperparameters(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("{}\n")
    hyper = {"num_train_epochs": 2, "learningRate": 0.1, "lora_r": 4, "peft_type": "LORA", "merge": "true"}
    argv = runtime_command("peft-lora", tmp_path, tmp_path / "out", hyper, python="python3")
    assert argv[:3] == ["python3", "-m", "modelferry.sidecar.trainers.peft_lora"]
    assert argv[argv.index("--dataset") + 1] == str(tmp_path / "data" / "train.jsonl")
    assert argv[argv.index("--epochs") + 1] == "2"
    assert argv[argv.index("--learning-rate") + 1] == "0.1"
    assert argv[argv.index("--lora-r") + 1] == "4"
    assert argv[-1] == "--merge"


@pytest.mark.parametrize(
    ("runtime", "hyper", "words"),
    [
        ("cohere", {}, "not supported"),
        ("axolotl", {}, "unknown runtime"),
        ("peft-lora", {"bogus": 1}, "unknown peft-lora hyperparameters: bogus"),
        ("peft-lora", {"peft_type": "prefix"}, "peft_type"),
        ("peft-lora", {"train_dataset_file": "other.jsonl"}, "not in the staged data"),
    ],
)
def test_runtime_command_rejects_bad_input(tmp_path: Path, runtime: str, hyper: dict[str, object], words: str) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("{}\n")
    with pytest.raises(UsageError, match=words):
        runtime_command(runtime, tmp_path, tmp_path / "out", hyper)


def test_find_dataset_needs_exactly_one_file(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "b.jsonl").write_text("")
    with pytest.raises(UsageError, match="found 2"):
        find_dataset(tmp_path)
    assert find_dataset(tmp_path, "b.jsonl") == tmp_path / "b.jsonl"


def test_mlflow_settings_fall_back_to_mlflow_variables() -> None:
    env = {
        "MLFLOW_TRACKING_URI": "http://m:5000",
        "MLFLOW_EXPERIMENT_NAME": "exp",
        "MLFLOW_RUN_ID": "r1",
        "MLFLOW_TRACKING_TOKEN": "tok",
        "MLFLOW_TRACKING_USERNAME": "u",
        "MLFLOW_TRACKING_PASSWORD": "p",
        "MLFLOW_TRACKING_INSECURE_TLS": "true",
    }
    s = MlflowSettings().resolved(env)
    assert (s.tracking_uri, s.experiment_name, s.run_id, s.username) == ("http://m:5000", "exp", "r1", "u")
    assert s.token is not None and s.token.get_secret_value() == "tok"
    assert s.password is not None and s.password.get_secret_value() == "p"
    assert s.insecure_tls is True
    explicit = MlflowSettings(tracking_uri="http://other").resolved(env)
    assert explicit.tracking_uri == "http://other"


def test_failed_uri_and_last_checkpoint(tmp_path: Path) -> None:
    assert failed_uri("s3://bucket/runs/r1") == "s3://bucket/runs/r1/failed"
    assert last_checkpoint(tmp_path / "missing") is None
    for n in (2, 10, 9):
        (tmp_path / "checkpoints" / f"checkpoint-{n}").mkdir(parents=True)
    found = last_checkpoint(tmp_path)
    assert found is not None and found.name == "checkpoint-10"


def test_newest_trainer_state_follows_checkpoints(tmp_path: Path) -> None:
    import os

    from modelferry.sidecar.metrics import NewestTrainerState

    reader = NewestTrainerState(tmp_path / "output")
    assert reader.read() == []
    first = tmp_path / "output" / "checkpoint-2" / "trainer_state.json"
    first.parent.mkdir(parents=True)
    first.write_text(json.dumps({"log_history": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]}))
    assert [r.step for r in reader.read()] == [1, 2]
    second = tmp_path / "output" / "checkpoint-4" / "trainer_state.json"
    second.parent.mkdir(parents=True)
    history = [{"step": s, "loss": 2.0 / s} for s in (1, 2, 3, 4)]
    second.write_text(json.dumps({"log_history": history}))
    os.utime(second, (first.stat().st_mtime + 5, first.stat().st_mtime + 5))
    assert [r.step for r in reader.read()] == [3, 4]
