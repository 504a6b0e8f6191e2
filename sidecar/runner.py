"""One training run end to end: stage, release the trainer, watch it, report, ship the result."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from modelferry.errors import EXIT_USAGE, ModelferryError
from modelferry.sidecar import staging
from modelferry.sidecar.lifecycle import Verdict, Watchdog
from modelferry.sidecar.metrics import (
    JsonLinesTail,
    MetricRecord,
    NewestTrainerState,
    Progress,
    TrainerStateReader,
    parse_line,
)
from modelferry.sidecar.mlflow_stream import MlflowStreamer
from modelferry.sidecar.settings import SidecarSettings
from modelferry.sidecar.supervisor import CONTROL_DIR, LOG_FILE, LocalTrainer, PodTrainer, Trainer, write_atomic
from modelferry.sidecar.trainer_command import runtime_command

log = logging.getLogger("modelferry.sidecar")

PROGRESS_PREFIX = "MODELFERRY_PROGRESS "


@dataclass
class RunResult:
    """How the run ended; ``to_dict`` is the termination message the controller reads."""

    exit_code: int
    phase: str  # Succeeded | Failed
    reason: str
    message: str = ""
    output_uri: str | None = None
    mlflow_run_id: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    mlflow: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "reason": self.reason,
            "message": self.message,
            "exitCode": self.exit_code,
            "outputUri": self.output_uri,
            "mlflowRunId": self.mlflow_run_id,
            "progress": self.progress,
            "mlflow": self.mlflow,
        }


@contextmanager
def forward_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT to the sidecar ask the trainer to stop (the main loop forwards them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, _frame: object) -> None:
        log.warning("received signal %s: stopping the trainer", signum)
        stop.set()

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Runner:
    """Drives one run. ``command`` is the trainer's argv (local mode); pod mode needs none."""

    def __init__(
        self,
        settings: SidecarSettings,
        command: list[str] | None = None,
        *,
        on_records: Callable[[list[MetricRecord]], None] | None = None,
    ) -> None:
        """``on_records`` sees every new metric report once, in order (a display; the demo shows each step)."""
        self.on_records = on_records
        self.s = settings
        self.ws = settings.workspace.resolve()
        self.ctl = self.ws / CONTROL_DIR
        self.output = self.ws / settings.output_dir
        self.command = command or []
        self.stop_requested = threading.Event()
        self.progress = Progress()
        self.streamer = MlflowStreamer(settings.mlflow.resolved(), params=settings.hyperparameters, tags=settings.tags)
        self.metrics_log = self.ctl / "metrics.jsonl"  # every record we saw, whatever its source
        self._last_status = 0.0

    # -- steps ---------------------------------------------------------------------------------
    def stage_inputs(self) -> None:
        s = self.s
        if s.base_model_uri:
            staging.stage(s.base_model_uri, self.ws / "model", s.source, s.transfer)
        if s.dataset_uri:
            staging.stage(s.dataset_uri, self.ws / "data", s.source, s.transfer)

    def trainer_env(self, run_id: str | None) -> dict[str, str]:
        env = {
            **self.s.trainer_env,
            "MODELFERRY_WORKSPACE": str(self.ws),
            "MODELFERRY_MODEL_DIR": str(self.ws / "model"),
            "MODELFERRY_DATA_DIR": str(self.ws / "data"),
            "MODELFERRY_OUTPUT_DIR": str(self.output),
            "MODELFERRY_METRICS_FILE": str(self.ws / self.s.metrics_file),
        }
        m = self.streamer.settings
        if run_id:
            env["MLFLOW_RUN_ID"] = run_id
        if m.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = m.tracking_uri
        if m.experiment_name:
            env["MLFLOW_EXPERIMENT_NAME"] = m.experiment_name
        return env

    def make_trainer(self) -> Trainer:
        if self.s.mode == "pod":
            return PodTrainer(self.ws)
        if not self.command and self.s.runtime:
            self.command = runtime_command(self.s.runtime, self.ws, self.output, self.s.hyperparameters)
        if not self.command:
            raise ModelferryError(
                "no trainer command", hint="Give it after --: modelferry sidecar run -- python train.py"
            )
        return LocalTrainer(self.command, self.ctl / LOG_FILE, cwd=self.ws)

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> RunResult:
        self.ctl.mkdir(parents=True, exist_ok=True)
        self.output.mkdir(parents=True, exist_ok=True)
        pod = PodTrainer(self.ws) if self.s.mode == "pod" else None
        try:
            self.stage_inputs()
            trainer = pod or self.make_trainer()
            if pod is not None and self.s.runtime:
                pod.set_command(
                    runtime_command(self.s.runtime, self.ws, self.output, self.s.hyperparameters, python="python3")
                )
        except ModelferryError as exc:
            if pod is not None:
                pod.abort(exc.exit_code)
            raise
        run_id = self.streamer.start()
        if self.streamer.enabled and run_id is None:
            log.warning("MLflow not reachable yet: the trainer starts without MLFLOW_RUN_ID; metrics are buffered")
        with forward_signals(self.stop_requested):
            trainer.start(self.trainer_env(run_id))
            code, reason = self.watch(trainer)
        return self.finish(code, reason)

    def _readers(self) -> list[JsonLinesTail | TrainerStateReader]:
        readers: list[JsonLinesTail | TrainerStateReader] = [JsonLinesTail(self.ws / self.s.metrics_file)]
        if self.s.trainer_state:
            readers.append(TrainerStateReader(self.ws / self.s.trainer_state))
        else:  # a Hugging Face Trainer writing into the output directory is picked up by itself
            readers.append(NewestTrainerState(self.output))
        return readers

    def watch(self, trainer: Trainer) -> tuple[int, str]:
        life = self.s.lifecycle
        dog = Watchdog(life, started=time.monotonic())
        readers = self._readers()
        seen: set[tuple[int, str]] = set()
        reason, stop_sent, code, draining = "Completed", 0.0, None, False
        while True:
            trainer.wait_event(life.poll_interval)
            now = time.monotonic()
            records: list[MetricRecord] = []
            lines = trainer.lines()
            if lines:
                dog.activity(now)
            if self.s.stdout_metrics:
                records += [r for r in (parse_line(x) for x in lines) if r is not None]
            for reader in readers:
                records += reader.read()
            fresh = []
            for rec in records:  # the same report may come from the file and stdout: keep one
                key = (rec.step, ",".join(sorted(rec.values)))
                if key not in seen:
                    seen.add(key)
                    fresh.append(rec)
            verdict = Verdict.CONTINUE
            for rec in fresh:
                self.progress.update(rec, now)
                v = dog.observe(rec, now)
                verdict = v if v is not Verdict.CONTINUE else verdict
            self._record(fresh)
            if fresh and self.on_records is not None:
                self.on_records(fresh)
            self.streamer.put(fresh)
            self._status(now)
            code = trainer.poll()
            if code is not None:
                if draining:
                    break
                draining = True  # one more pass: what it wrote just before exiting still counts
                continue
            if verdict is Verdict.CONTINUE:
                verdict = dog.check(now)
            if self.stop_requested.is_set() and not stop_sent:
                verdict, reason = Verdict.TIMEOUT, "Terminated"
            if verdict is Verdict.STALLED and life.stall_action == "warn":
                if not dog.warned_stall:
                    log.warning("trainer made no progress for %.0f s", life.stall_timeout)
                    dog.warned_stall = True
                verdict = Verdict.CONTINUE
            if verdict is not Verdict.CONTINUE and not stop_sent:
                if reason != "Terminated":
                    reason = {Verdict.STALLED: "Stalled", Verdict.EARLY_STOP: "EarlyStopped"}.get(verdict, "Timeout")
                log.warning("stopping the trainer: %s", reason)
                trainer.terminate()
                stop_sent = now
            elif stop_sent and now - stop_sent > life.term_grace:
                log.warning("trainer ignored SIGTERM for %.0f s: killing it", life.term_grace)
                trainer.kill()
                stop_sent = now + 1e9  # once
        return code, reason

    def _record(self, records: list[MetricRecord]) -> None:
        if not records:
            return
        with self.metrics_log.open("a", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps({"step": r.step, "timestamp": r.timestamp_ms / 1000, **r.values}) + "\n")

    def _status(self, now: float, force: bool = False) -> None:
        if not force and now - self._last_status < 5.0:
            return
        self._last_status = now
        progress = self.progress.to_dict(now)
        report = {"progress": progress, "mlflowRunId": self.streamer.run_id}
        write_atomic(self.ws / self.s.status_file, json.dumps(report))
        if self.s.mode == "pod":
            # The controller tails this container's log for the newest such line (pods/log, no extra RBAC).
            sys.stderr.write(PROGRESS_PREFIX + json.dumps(report, separators=(",", ":")) + "\n")
            sys.stderr.flush()
        elif self.progress.step:
            log.info(
                "step %s/%s (%s%%) %s",
                progress["step"],
                progress.get("totalSteps", "?"),
                progress.get("percent", "?"),
                progress["metrics"],
            )

    def finish(self, code: int, reason: str) -> RunResult:
        s = self.s
        success = code == 0 and reason in ("Completed", "EarlyStopped")
        if reason == "EarlyStopped" and code != 0:  # we stopped it: its last checkpoint is the result
            success = True
        if code != 0 and reason == "Completed":
            reason = "TrainerFailed"
        if reason == "EarlyStopped" and success:
            ckpt = staging.last_checkpoint(self.output)
            if ckpt is not None:
                shutil.copytree(ckpt, self.output / "final", dirs_exist_ok=True)
        self._status(time.monotonic(), force=True)
        result = RunResult(
            exit_code=0 if success else (code or 1),
            phase="Succeeded" if success else "Failed",
            reason=reason,
            mlflow_run_id=self.streamer.run_id,
            progress=self.progress.to_dict(),
        )
        if success:
            self._write_summary(result)
            if s.output_uri and s.rank == 0:
                staging.upload(self.output, s.output_uri, s.target, s.transfer)
                result.output_uri = s.output_uri
                self.streamer.set_tags({"modelferry.output_uri": s.output_uri})
            result.message = f"training finished after {self.progress.step} steps"
        else:
            result.message = f"trainer exited with status {code} ({reason})"
            if s.output_uri and s.rank == 0:
                ckpt = staging.last_checkpoint(self.output)
                files = [self.ctl / LOG_FILE, self.metrics_log, self.ws / s.metrics_file, self.ws / s.status_file]
                bundle = staging.collect_failed(self.ctl, files, ckpt)
                (bundle / "result.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
                target = staging.failed_uri(s.output_uri)
                try:
                    staging.upload(bundle, target, s.target, s.transfer)
                    result.output_uri = target
                except ModelferryError as exc:
                    log.error("could not upload the failed run's logs to %s: %s", target, exc)
        status = "FINISHED" if success else ("KILLED" if reason == "Terminated" else "FAILED")
        self.streamer.finish(status)
        result.mlflow = self.streamer.report()
        return result

    def _write_summary(self, result: RunResult) -> None:
        summary = {"reason": result.reason, "mlflowRunId": result.mlflow_run_id, **self.progress.to_dict()}
        (self.output / "metrics_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        log_file = self.ctl / LOG_FILE
        if log_file.exists():
            shutil.copy2(log_file, self.output / LOG_FILE)


def run_training(settings: SidecarSettings, command: list[str] | None = None) -> RunResult:
    """Run the whole thing; a usage problem found before the trainer starts raises UsageError."""
    if settings.mode == "local" and not command and not settings.runtime:
        raise ModelferryError(
            "no trainer command given", hint="modelferry sidecar run -- python train.py ..."
        ) from None
    return Runner(settings, command).run()


__all__ = ["EXIT_USAGE", "PROGRESS_PREFIX", "RunResult", "Runner", "run_training"]
