"""The pod protocol: the sidecar and the controller's sh wrapper as two processes sharing a directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from modelferry.controller.training.wrapper import wrapped_command
from tests.servers.training import METRICS_TRAINER, script


def _env(ws: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MODELFERRY_"))}
    env["MODELFERRY_WORKSPACE"] = str(ws)
    return env


def _sidecar(ws: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelferry",
            "sidecar",
            "run",
            "--mode",
            "pod",
            "--workspace",
            str(ws),
            "--termination-log",
            str(ws.parent / "termination-log"),
            "--json",
            *extra,
        ],
        env=_env(ws),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _trainer(ws: Path, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        wrapped_command(argv, []), env=_env(ws), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_pod_protocol_success(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    data = tmp_path / "in" / "train.jsonl"
    data.parent.mkdir()
    data.write_text('{"text": "hello"}\n')
    trainer = _trainer(ws, [*script(tmp_path, "t", METRICS_TRAINER), "4"])
    sidecar = _sidecar(ws, "--dataset", str(data), "--output", str(tmp_path / "out"))
    out, err = sidecar.communicate(timeout=60)
    assert sidecar.returncode == 0, err
    assert trainer.wait(timeout=30) == 0
    result = json.loads(out)
    assert result["phase"] == "Succeeded"
    assert result["progress"]["step"] == 4
    assert result["progress"]["percent"] == 100.0
    assert (ws / "data" / "train.jsonl").read_text() == '{"text": "hello"}\n'
    assert (tmp_path / "out" / "weights.bin").exists()
    assert (tmp_path / "out" / ".modelferry" / "manifest.json").exists()
    assert (ws / ".modelferry" / "exit-code").read_text().strip() == "0"
    assert "[trainer] run id" in err  # the trainer's output reaches the sidecar's log (stderr with --json)
    assert json.loads((tmp_path / "termination-log").read_text())["phase"] == "Succeeded"


def test_pod_protocol_trainer_failure_propagates(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    trainer = _trainer(ws, [sys.executable, "-c", "import sys; print('bad'); sys.exit(7)"])
    sidecar = _sidecar(ws, "--output", str(tmp_path / "out"))
    _, err = sidecar.communicate(timeout=60)
    assert trainer.wait(timeout=30) == 7
    assert sidecar.returncode == 7, err
    assert "bad" in (tmp_path / "out" / "failed" / "trainer.log").read_text()


def test_pod_protocol_staging_failure_aborts_the_trainer(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    trainer = _trainer(ws, [sys.executable, "-c", "open('ran', 'w')"])
    sidecar = _sidecar(ws, "--dataset", str(tmp_path / "missing"), "--output", str(tmp_path / "out"))
    sidecar.communicate(timeout=60)
    assert sidecar.returncode == 3
    assert trainer.wait(timeout=30) == 3
    assert not (ws / "ran").exists()


def test_sigterm_to_the_local_sidecar_reaches_the_trainer(tmp_path: Path) -> None:
    import signal
    import time

    ws = tmp_path / "ws"
    argv = script(
        tmp_path,
        "trap",
        """
        import os, signal, sys, time
        def bye(*_):
            print("trainer got SIGTERM", flush=True)
            sys.exit(143)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        time.sleep(60)
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelferry", "sidecar", "run", "--workspace", str(ws), "--", *argv],
        env=_env(ws),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = ws / ".modelferry" / "trainer.log"
    deadline = time.monotonic() + 30
    while not (log.exists() and "ready" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert "trainer got SIGTERM" in out
