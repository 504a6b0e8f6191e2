"""Prometheus metrics ``modelferry_agent_*`` on a registry of their own (no global state)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Model downloads take seconds to many hours: buckets from 1 s to 12 h.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 43200, float("inf"))


class AgentMetrics:
    """All agent metrics; one instance per process (tests make their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.downloads_succeeded = Counter(
            "modelferry_agent_downloads_succeeded", "Models downloaded and verified", ["kind"], registry=r
        )
        self.downloads_failed = Counter(
            "modelferry_agent_downloads_failed",
            "Model downloads that failed, by reason",
            ["kind", "reason"],
            registry=r,
        )
        self.download_bytes = Counter(
            "modelferry_agent_download_bytes", "Bytes downloaded into the models root", registry=r
        )
        self.download_duration = Histogram(
            "modelferry_agent_download_duration_seconds",
            "Wall time of one model download, verification included",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.verifications = Counter(
            "modelferry_agent_verifications", "Files verified, by result", ["result"], registry=r
        )
        self.queue_depth = Gauge("modelferry_agent_queue_depth", "Tasks waiting for a worker", registry=r)
        self.active_workers = Gauge("modelferry_agent_active_workers", "Workers busy with a task", registry=r)
        self.rate_limit_waits = Counter(
            "modelferry_agent_rate_limit_waits", "Retries after a store throttled or failed transiently", registry=r
        )
        self.cleanups = Counter(
            "modelferry_agent_cleanup", "Model directories removed, by reason", ["reason"], registry=r
        )
        self.cleanup_bytes = Counter("modelferry_agent_cleanup_bytes", "Bytes freed by removing models", registry=r)
        self.models = Gauge("modelferry_agent_models", "Models on this node, by status", ["status"], registry=r)
        self.disk_bytes = Gauge("modelferry_agent_disk_bytes", "Models filesystem usage", ["kind"], registry=r)
        self.memory_bytes = Gauge("modelferry_agent_memory_bytes", "Node memory", ["kind"], registry=r)
        self.cpu_count = Gauge("modelferry_agent_cpus", "CPUs on the node", registry=r)
        self.gpu_count = Gauge("modelferry_agent_gpus", "GPUs visible through NVML", registry=r)
        self.gpu_utilization = Gauge(
            "modelferry_agent_gpu_utilization_ratio", "GPU busy time over the last sample (NVML)", ["gpu"], registry=r
        )
        self.gpu_memory = Gauge(
            "modelferry_agent_gpu_memory_bytes", "GPU memory (NVML), by kind: total, used", ["gpu", "kind"], registry=r
        )
        self.network_bytes = Gauge(
            "modelferry_agent_network_bytes",
            "Bytes through the node's interfaces since boot, loopback excluded (use rate())",
            ["direction"],
            registry=r,
        )

    def record_resources(self, res: dict[str, Any]) -> None:
        for kind, key in (
            ("total", "modelsRootTotalBytes"),
            ("used", "modelsRootUsedBytes"),
            ("free", "modelsRootFreeBytes"),
        ):
            if key in res:
                self.disk_bytes.labels(kind).set(res[key])
        self.memory_bytes.labels("total").set(res.get("memoryTotalBytes", 0))
        self.memory_bytes.labels("available").set(res.get("memoryAvailableBytes", 0))
        self.cpu_count.set(res.get("cpuCount", 0))
        self.gpu_count.set(len(res.get("gpus") or []))
        for gpu in res.get("gpus") or []:
            index = str(gpu.get("index", ""))
            if "utilizationPercent" in gpu:
                self.gpu_utilization.labels(index).set(gpu["utilizationPercent"] / 100)
            for kind, key in (("total", "memoryTotalBytes"), ("used", "memoryUsedBytes")):
                if key in gpu:
                    self.gpu_memory.labels(index, kind).set(gpu[key])
        for direction, key in (("receive", "networkReceiveBytes"), ("transmit", "networkTransmitBytes")):
            if key in res:
                self.network_bytes.labels(direction).set(res[key])

    def render(self) -> bytes:
        return generate_latest(self.registry)
