"""Node resources (CPU, memory, models-root disk, network, GPUs) for the ConfigMap and metrics."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from modelferry.controller.agent.disk import disk_usage

log = logging.getLogger(__name__)


def gpu_inventory() -> list[dict[str, Any]]:
    """Per-GPU name and memory via NVML; empty without a driver (never an error)."""
    try:
        import pynvml  # nvidia-ml-py, optional (mypy: ignore_missing_imports in pyproject)
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no NVIDIA driver on this node
        return []
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpu: dict[str, Any] = {
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else str(name),
                "memoryTotalBytes": int(mem.total),
                "memoryUsedBytes": int(mem.used),
            }
            try:
                gpu["utilizationPercent"] = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception:  # not supported on every device (MIG instances, some vGPUs)
                log.debug("no utilisation reading for GPU %s", i)
            out.append(gpu)
        return out
    except Exception as exc:  # a flaky driver must not take the agent down
        log.warning("NVML query failed: %s", exc)
        return []
    finally:
        pynvml.nvmlShutdown()


def memory() -> tuple[int, int]:
    """Total and available memory in bytes (``/proc/meminfo``; sysconf where it is missing)."""
    try:
        fields = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            fields[name] = int(rest.split()[0]) * 1024
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")


def network_bytes(proc_net_dev: Path = Path("/proc/net/dev")) -> tuple[int, int] | None:
    """Bytes received and sent since boot over every interface but loopback; None where unreadable."""
    try:
        lines = proc_net_dev.read_text().splitlines()[2:]  # two header lines
        rx = tx = 0
        for line in lines:
            iface, _, rest = line.partition(":")
            fields = rest.split()
            if iface.strip() == "lo" or len(fields) < 9:
                continue
            rx, tx = rx + int(fields[0]), tx + int(fields[8])
        return rx, tx
    except (OSError, ValueError):
        return None


def collect(models_root: Path, gpus: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A snapshot of this node's resources (``gpus`` injectable for tests)."""
    total, available = memory()
    out: dict[str, Any] = {
        "cpuCount": os.cpu_count() or 0,
        "loadAverage1m": round(os.getloadavg()[0], 2),
        "memoryTotalBytes": total,
        "memoryAvailableBytes": available,
        "gpus": gpu_inventory() if gpus is None else gpus,
    }
    net = network_bytes()
    if net is not None:
        out["networkReceiveBytes"], out["networkTransmitBytes"] = net
    try:
        usage = disk_usage(models_root)
        out.update(
            {"modelsRootTotalBytes": usage.total, "modelsRootUsedBytes": usage.used, "modelsRootFreeBytes": usage.free}
        )
    except OSError as exc:
        log.warning("cannot read disk usage of %s: %s", models_root, exc)
    return out
