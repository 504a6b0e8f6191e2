"""Streams metrics to MLflow in batches from a background thread; buffers while MLflow is down.

MLflow trouble never fails the training: every call is caught, counted and reported, and the
metrics wait in a bounded buffer until the server answers again.
"""

from __future__ import annotations

import collections
import logging
import os
import platform
import socket
import threading
import time
from typing import Any

from modelferry.logs import register_secret
from modelferry.sidecar.metrics import MetricRecord
from modelferry.sidecar.settings import MlflowSettings
from modelferry.tls import TLSConfig, is_tls_failure, resolve_tls

log = logging.getLogger("modelferry.sidecar.mlflow")

MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_PARAM_LEN = 6000


def configure_env(settings: MlflowSettings) -> TLSConfig:
    """MLflow's client reads credentials and HTTP behaviour (trust too) from the environment of this process."""
    # The tracking URI goes to MlflowClient directly; credentials are only read from the environment.
    if settings.token is not None:
        register_secret(settings.token.get_secret_value())
        os.environ["MLFLOW_TRACKING_TOKEN"] = settings.token.get_secret_value()
    if settings.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.username
    if settings.password is not None:
        register_secret(settings.password.get_secret_value())
        os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.password.get_secret_value()
    tls = resolve_tls(verify=not settings.insecure_tls, own_variables=("MLFLOW_TRACKING_SERVER_CERT_PATH",))
    if not tls.verify:
        os.environ["MLFLOW_TRACKING_INSECURE_TLS"] = "true"
    elif tls.cafile:
        os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"] = tls.cafile
    # We retry ourselves (without blocking the trainer); MLflow's own backoff would stall a batch for minutes.
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(max(1, settings.request_timeout)))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return tls


def system_tags() -> dict[str, str]:
    """Where the run happened."""
    return {
        "modelferry.host": socket.gethostname(),
        "modelferry.python": platform.python_version(),
        "modelferry.platform": platform.platform(terse=True),
        "modelferry.cpus": str(os.cpu_count() or 0),
    }


class MlflowStreamer:
    """Owns one MLflow run: params and tags once, metrics in batches, a final status."""

    def __init__(
        self,
        settings: MlflowSettings,
        *,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.run_id: str | None = settings.run_id
        self.enabled = bool(settings.tracking_uri)
        self._params = {str(k): str(v)[:MAX_PARAM_LEN] for k, v in (params or {}).items()}
        self._tags = {**system_tags(), **(tags or {})}
        self._buffer: collections.deque[MetricRecord] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._down_since: float | None = None
        self.errors = 0
        self.dropped = 0
        self.delivered = 0
        self.last_error: str | None = None

    # -- public API (any thread) -------------------------------------------------------------
    def start(self, wait_for_run: float = 10.0) -> str | None:
        """Start the thread; wait up to ``wait_for_run`` s for a run id (None: MLflow not reachable yet)."""
        if not self.enabled:
            log.info("MLflow tracking is off (no MLFLOW_TRACKING_URI)")
            return None
        self.tls = configure_env(self.settings)
        self._thread = threading.Thread(target=self._loop, name="mlflow-streamer", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + wait_for_run
        while self.run_id is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.run_id

    def put(self, records: list[MetricRecord]) -> None:
        if not self.enabled or not records:
            return
        with self._lock:
            self._buffer.extend(records)
            while len(self._buffer) > self.settings.buffer_limit:
                self._buffer.popleft()
                self.dropped += 1
            full = len(self._buffer) >= self.settings.batch_size
        if full:  # otherwise the next tick sends them together: fewer, larger requests
            self._wake.set()

    def set_tags(self, tags: dict[str, str]) -> None:
        with self._lock:
            self._tags.update(tags)
        self._wake.set()

    def finish(self, status: str, timeout: float = 30.0) -> bool:
        """Deliver what is buffered (up to ``timeout`` s), set the run's status; True when all arrived."""
        if not self.enabled or self._thread is None:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self.run_id is None or self._pending()):
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=max(1.0, deadline - time.monotonic()))
        complete = self.run_id is not None and not self._pending()
        if self.run_id is not None:
            try:
                self._flush_once()
                self._get_client().set_terminated(self.run_id, status=status)
            except Exception as exc:
                self._failed(exc)
                complete = False
        if not complete:
            log.warning(
                "MLflow did not receive everything: %s metrics undelivered, %s dropped, last error: %s",
                len(self._buffer),
                self.dropped,
                self.last_error,
            )
        return complete

    def report(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "delivered": self.delivered,
            "buffered": len(self._buffer),
            "dropped": self.dropped,
            "errors": self.errors,
            "lastError": self.last_error,
        }

    # -- the thread ----------------------------------------------------------------------------
    def _pending(self) -> bool:
        with self._lock:
            return bool(self._buffer or self._params or self._tags)

    def _get_client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.settings.tracking_uri)
        return self._client

    def _ensure_run(self) -> None:
        if self.run_id is not None:
            return
        client = self._get_client()
        name = self.settings.experiment_name or "Default"
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(name)
        run = client.create_run(exp_id, run_name=self.settings.run_name, tags={"modelferry.component": "sidecar"})
        self.run_id = run.info.run_id
        log.info("MLflow run %s in experiment %s", self.run_id, name)

    def _flush_once(self) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self._ensure_run()
        assert self.run_id is not None
        client = self._get_client()
        with self._lock:
            params = dict(list(self._params.items())[:MAX_PARAMS_PER_BATCH])
            tags = dict(list(self._tags.items())[:MAX_TAGS_PER_BATCH])
            records: list[MetricRecord] = []
            count = 0
            for rec in self._buffer:
                if records and count + len(rec.values) > self.settings.batch_size:
                    break
                records.append(rec)
                count += len(rec.values)
        metrics = [Metric(k, v, r.timestamp_ms, r.step) for r in records for k, v in r.values.items()]
        if not (metrics or params or tags):
            return
        client.log_batch(
            self.run_id,
            metrics=metrics,
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        with self._lock:
            for _ in records:
                self._buffer.popleft()
            for k in params:
                self._params.pop(k, None)
            for k, value in tags.items():
                if self._tags.get(k) == value:  # a newer value set meanwhile stays pending
                    del self._tags[k]
        self.delivered += len(metrics)
        if self._down_since is not None:
            log.info("MLflow reachable again after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        if is_tls_failure(exc):  # still retried (training goes on), but the message says how to fix it
            failure = self.tls.failure(str(self.settings.tracking_uri), exc)
            self.last_error = f"{failure} ({failure.hint})"
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("MLflow unreachable, buffering metrics (training continues): %s", self.last_error)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._flush_once()
                more = self._pending()
            except Exception as exc:  # any MLflow failure: keep the metrics, try again later
                self._failed(exc)
                self._stop.wait(self.settings.retry_interval)
                continue
            if not more:
                self._wake.wait(self.settings.flush_interval)
                self._wake.clear()
