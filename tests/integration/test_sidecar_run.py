"""The sidecar end to end against a real MLflow server and moto's S3."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelferry.sidecar.embedded import EmbeddedMlflow
from modelferry.sidecar.runner import Runner
from modelferry.sidecar.settings import LifecycleSettings, MlflowSettings, SidecarSettings
from tests.servers.s3 import MotoS3, list_keys, shared_servers
from tests.servers.training import METRICS_TRAINER, metric_history, new_bucket, s3_credentials, script


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMlflow]:
    server = EmbeddedMlflow(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3() -> MotoS3:
    return shared_servers()[0]


def settings_for(tmp_path: Path, s3: MotoS3, mlflow_url: str | None, bucket: str, **kw: Any) -> SidecarSettings:
    creds = s3_credentials(s3)
    life = kw.pop("lifecycle", {})
    return SidecarSettings(
        workspace=tmp_path / "ws",
        output_uri=f"s3://{bucket}/runs/r1",
        mlflow=MlflowSettings(tracking_uri=mlflow_url, experiment_name="tests", flush_interval=0.1, retry_interval=0.2),
        lifecycle=LifecycleSettings(poll_interval=0.1, **life),
        source=creds,
        target=creds,
        termination_log=str(tmp_path / "termination-log"),
        **kw,
    )


def test_trainer_exit_1_uploads_logs_under_failed(tmp_path: Path, s3: MotoS3, mlflow_server: EmbeddedMlflow) -> None:
    bucket = new_bucket(s3)
    argv = script(
        tmp_path,
        "fails",
        """
        import json, os, sys
        with open(os.environ["MODELFERRY_METRICS_FILE"], "a") as fh:
            fh.write(json.dumps({"step": 1, "loss": 3.5}) + "\\n")
        print("something went wrong in the trainer", flush=True)
        sys.exit(1)
        """,
    )
    result = Runner(settings_for(tmp_path, s3, mlflow_server.url, bucket), argv).run()
    assert result.exit_code == 1
    assert result.phase == "Failed"
    assert result.reason == "TrainerFailed"
    assert result.output_uri == f"s3://{bucket}/runs/r1/failed"
    client = s3.client()
    keys = list_keys(client, bucket, "runs/r1/")
    assert "runs/r1/failed/trainer.log" in keys
    assert "runs/r1/failed/metrics.jsonl" in keys
    assert "runs/r1/failed/result.json" in keys
    assert "runs/r1/weights.bin" not in keys
    log_text = client.get_object(Bucket=bucket, Key="runs/r1/failed/trainer.log")["Body"].read().decode()
    assert "something went wrong in the trainer" in log_text
    assert metric_history(mlflow_server.url, result.mlflow_run_id or "", "loss") == [(1, 3.5)]
    from mlflow.tracking import MlflowClient

    assert MlflowClient(mlflow_server.url).get_run(result.mlflow_run_id).info.status == "FAILED"


def test_trainer_killed_by_signal(tmp_path: Path, s3: MotoS3) -> None:
    bucket = new_bucket(s3)
    argv = script(tmp_path, "killed", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    result = Runner(settings_for(tmp_path, s3, None, bucket), argv).run()
    assert result.exit_code == 128 + 9
    assert result.phase == "Failed"
    assert "runs/r1/failed/result.json" in list_keys(s3.client(), bucket, "runs/r1/")


def test_mlflow_down_for_part_of_the_run(tmp_path: Path, s3: MotoS3, mlflow_server: EmbeddedMlflow) -> None:
    server = mlflow_server  # stopped and started again on the same port and database
    bucket = new_bucket(s3)
    argv = [*script(tmp_path, "gated", METRICS_TRAINER), "10", "6"]
    runner = Runner(settings_for(tmp_path, s3, server.url, bucket), argv)
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", runner.run()))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while runner.streamer.delivered < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.streamer.delivered >= 5
        server.stop()
        (tmp_path / "ws" / "gate").write_text("go")
        while runner.streamer.errors == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.streamer.errors > 0  # it noticed the outage and kept the metrics
    finally:
        if server.proc is None:
            server.start()
        (tmp_path / "ws" / "gate").write_text("go")
        thread.join(60)
    result = box["result"]
    assert result.exit_code == 0
    assert [s for s, _ in metric_history(server.url, result.mlflow_run_id, "loss")] == list(range(1, 11))
    assert result.mlflow["errors"] > 0
    assert result.mlflow["buffered"] == 0


def test_stall_detection_stops_the_trainer(tmp_path: Path, s3: MotoS3) -> None:
    bucket = new_bucket(s3)
    argv = script(tmp_path, "stalls", "import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    settings = settings_for(tmp_path, s3, None, bucket, lifecycle={"stall_timeout": 1.0, "term_grace": 5.0})
    result = Runner(settings, argv).run()
    assert result.reason == "Stalled"
    assert result.exit_code == 128 + 15
    assert "runs/r1/failed/trainer.log" in list_keys(s3.client(), bucket, "runs/r1/")


def test_stall_action_warn_lets_a_slow_trainer_finish(tmp_path: Path, s3: MotoS3) -> None:
    bucket = new_bucket(s3)
    argv = script(tmp_path, "slow", "import time\ntime.sleep(1.5)\nprint('done', flush=True)\n")
    settings = settings_for(tmp_path, s3, None, bucket, lifecycle={"stall_timeout": 0.3, "stall_action": "warn"})
    result = Runner(settings, argv).run()
    assert (result.exit_code, result.reason) == (0, "Completed")


def test_overall_timeout_stops_the_trainer(tmp_path: Path, s3: MotoS3) -> None:
    bucket = new_bucket(s3)
    argv = script(tmp_path, "forever", "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.1)\n")
    result = Runner(settings_for(tmp_path, s3, None, bucket, lifecycle={"timeout": 1.0}), argv).run()
    assert result.reason == "Timeout"
    assert result.exit_code == 143
    assert result.phase == "Failed"


def test_early_stopping_by_the_sidecar_counts_as_success(tmp_path: Path, s3: MotoS3) -> None:
    bucket = new_bucket(s3)
    argv = script(
        tmp_path,
        "plateau",
        """
        import json, os, time
        out = os.environ["MODELFERRY_OUTPUT_DIR"]
        os.makedirs(out + "/checkpoints/checkpoint-2")
        open(out + "/checkpoints/checkpoint-2/adapter.bin", "wb").write(b"ck")
        for step, loss in enumerate([1.0, 0.5, 0.6, 0.7, 0.8], 1):
            print(json.dumps({"step": step, "eval_loss": loss}), flush=True)
        time.sleep(120)
        """,
    )
    settings = settings_for(tmp_path, s3, None, bucket, lifecycle={"early_stopping_patience": 2})
    result = Runner(settings, argv).run()
    assert result.reason == "EarlyStopped"
    assert result.exit_code == 0
    keys = list_keys(s3.client(), bucket, "runs/r1/")
    assert "runs/r1/final/adapter.bin" in keys
    assert "runs/r1/.modelferry/manifest.json" in keys


def test_sigterm_forwards_and_uploads_the_last_checkpoint(tmp_path: Path, s3: MotoS3) -> None:
    bucket = new_bucket(s3)
    argv = script(
        tmp_path,
        "graceful",
        """
        import os, signal, sys, time
        out = os.environ["MODELFERRY_OUTPUT_DIR"]
        def bye(*_):
            for n in (1, 3):
                os.makedirs(f"{out}/checkpoints/checkpoint-{n}", exist_ok=True)
                open(f"{out}/checkpoints/checkpoint-{n}/w.bin", "wb").write(b"%d" % n)
            sys.exit(143)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        time.sleep(120)
        """,
    )
    runner = Runner(settings_for(tmp_path, s3, None, bucket), argv)
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", runner.run()))
    thread.start()
    log = tmp_path / "ws" / ".modelferry" / "trainer.log"
    deadline = time.monotonic() + 30
    while not (log.exists() and "ready" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.stop_requested.set()
    thread.join(30)
    result = box["result"]
    assert result.reason == "Terminated"
    assert result.exit_code == 143
    keys = list_keys(s3.client(), bucket, "runs/r1/")
    assert "runs/r1/failed/checkpoint-3/w.bin" in keys
    assert "runs/r1/failed/checkpoint-1/w.bin" not in keys


def test_bad_trainer_command_is_a_usage_error(tmp_path: Path, s3: MotoS3) -> None:
    from modelferry.errors import UsageError

    with pytest.raises(UsageError, match="cannot start the trainer"):
        Runner(settings_for(tmp_path, s3, None, new_bucket(s3)), ["/nonexistent/trainer"]).run()


def test_hf_trainer_state_metrics_reach_mlflow(tmp_path: Path, s3: MotoS3, mlflow_server: EmbeddedMlflow) -> None:
    bucket = new_bucket(s3)
    argv = script(
        tmp_path,
        "hfstyle",
        """
        import json, os
        out = os.environ["MODELFERRY_OUTPUT_DIR"]
        state = {"max_steps": 3, "log_history": [{"step": s, "loss": 1.0 / s, "epoch": s / 3} for s in (1, 2, 3)]}
        open(out + "/trainer_state.json", "w").write(json.dumps(state))
        """,
    )
    result = Runner(settings_for(tmp_path, s3, mlflow_server.url, bucket), argv).run()
    assert result.exit_code == 0
    assert [s for s, _ in metric_history(mlflow_server.url, result.mlflow_run_id or "", "loss")] == [1, 2, 3]
    assert result.progress["percent"] == 100.0
