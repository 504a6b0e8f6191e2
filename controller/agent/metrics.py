"""Prometheus metrics on a registry of their own (no global state).

Two name sets: ``modelferry_agent_*`` and OME's model agent set (``model_agent_*`` with the
``model_type``/``namespace``/``name`` labels of OME's examples), so OME alerts and dashboards keep
working. ``model_type`` is the kind (``BaseModel``/``ClusterBaseModel``), as OME's agent reports it.
"""

from __future__ import annotations

from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Model downloads take seconds to many hours: buckets from 1 s to 12 h.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 43200, float("inf"))
# Finalising a verified copy (manifest, marker, two renames): milliseconds to minutes.
VERIFY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, float("inf"))


class ModelLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...


def ome_labels(ref: ModelLike) -> tuple[str, str, str]:
    """OME's ``model_type``, ``namespace``, ``name`` values (a ClusterBaseModel has an empty namespace)."""
    return ref.kind, ref.namespace, ref.name


OME_MODEL_LABELS = ("model_type", "namespace", "name")


class _Both:
    """Two gauges moved together (ours and OME's name for the same number)."""

    def __init__(self, *gauges: Gauge) -> None:
        self.gauges = gauges

    def set(self, value: float) -> None:
        for g in self.gauges:
            g.set(value)

    def inc(self, amount: float = 1) -> None:
        for g in self.gauges:
            g.inc(amount)

    def dec(self, amount: float = 1) -> None:
        for g in self.gauges:
            g.dec(amount)


class OMEMetrics:
    """OME's ``model_agent_*`` metric set, names and labels as OME's model agent documents them."""

    def __init__(self, r: CollectorRegistry) -> None:
        labels = OME_MODEL_LABELS
        self.downloads_success = Counter(
            "model_agent_downloads_success", "Total successful model downloads", labels, registry=r
        )
        self.downloads_failed = Counter(
            "model_agent_downloads_failed", "Total failed model downloads", labels, registry=r
        )
        self.download_duration = Histogram(
            "model_agent_download_duration_seconds",
            "Duration of model downloads in seconds",
            labels,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.download_bytes = Counter(
            "model_agent_download_bytes", "Total bytes downloaded for models", labels, registry=r
        )
        self.verifications = Counter(
            "model_agent_verifications", "Total model verifications", (*labels, "result"), registry=r
        )
        self.verification_duration = Histogram(
            "model_agent_verification_duration_seconds",
            "Time from the last byte to a verified model under its final name",
            buckets=VERIFY_BUCKETS,
            registry=r,
        )
        self.md5_checksum_failed = Counter(
            "model_agent_md5_checksum_failed",
            "Models whose files failed their checksum (MD5 or SHA-256) after the refetch",
            labels,
            registry=r,
        )
        self.active_workers = Gauge("model_agent_active_workers", "Number of active download workers", registry=r)
        self.task_queue_depth = Gauge("model_agent_task_queue_depth", "Tasks waiting for a worker", registry=r)
        self.configmap_operations = Counter(
            "model_agent_configmap_operations",
            "Operations on the per-node ConfigMap",
            ("operation", "result"),
            registry=r,
        )


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
        self.ome = OMEMetrics(r)
        self.queue_depth = _Both(
            Gauge("modelferry_agent_queue_depth", "Tasks waiting for a worker", registry=r), self.ome.task_queue_depth
        )
        self.active_workers = _Both(
            Gauge("modelferry_agent_active_workers", "Workers busy with a task", registry=r), self.ome.active_workers
        )
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

    def model_downloaded(self, ref: ModelLike, *, seconds: float, nbytes: int, files: int) -> None:
        """One model downloaded and verified (both name sets)."""
        labels = ome_labels(ref)
        self.downloads_succeeded.labels(ref.kind).inc()
        self.download_duration.observe(seconds)
        self.download_bytes.inc(nbytes)
        self.verifications.labels("success").inc(files)
        self.ome.downloads_success.labels(*labels).inc()
        self.ome.downloads_failed.labels(*labels)  # present at 0, as in OME's examples
        self.ome.md5_checksum_failed.labels(*labels)
        self.ome.download_duration.labels(*labels).observe(seconds)
        self.ome.download_bytes.labels(*labels).inc(nbytes)
        self.ome.verifications.labels(*labels, "success").inc()

    def model_failed(self, ref: ModelLike, reason: str) -> None:
        """One model failed on this node (both name sets)."""
        labels = ome_labels(ref)
        self.downloads_failed.labels(ref.kind, reason).inc()
        self.ome.downloads_failed.labels(*labels).inc()
        self.ome.md5_checksum_failed.labels(*labels)
        if reason == "IntegrityCheckFailed":
            self.verifications.labels("failure").inc()
            self.ome.verifications.labels(*labels, "failure").inc()
            self.ome.md5_checksum_failed.labels(*labels).inc()

    def configmap_operation(self, operation: str, ok: bool) -> None:
        self.ome.configmap_operations.labels(operation, "success" if ok else "failure").inc()

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
