"""Prometheus metrics ``modelferry_serve_*`` on a registry of their own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# A CPU generation of a small model takes milliseconds to minutes.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, float("inf"))


class ServeMetrics:
    """Requests, tokens and latencies of one server process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "modelferry_serve_requests",
            "Requests answered, by endpoint, served model and HTTP status",
            ["endpoint", "model", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter("modelferry_serve_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.completion_tokens = Counter(
            "modelferry_serve_completion_tokens", "Tokens generated", ["model"], registry=r
        )
        self.request_duration = Histogram(
            "modelferry_serve_request_duration_seconds",
            "Wall time of one generation request, queueing included",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "modelferry_serve_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated text",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "modelferry_serve_queue_wait_seconds",
            "Time a request waited for the model",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.running = Gauge("modelferry_serve_requests_running", "Requests generating now", registry=r)
        self.waiting = Gauge("modelferry_serve_requests_waiting", "Requests waiting for the model", registry=r)
        self.rejected = Counter(
            "modelferry_serve_requests_rejected", "Requests turned away because the queue was full", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
