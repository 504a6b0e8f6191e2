"""A running ModelSync mirrors the sync container's MODELFERRY_PROGRESS log lines into its status."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from modelferry.transfer.progress import format_progress_line
from tests.integration.test_controller_modelsync import HF, TARGET, modelsync, ms_status
from tests.servers.kube_controller import NS, Harness, eventually, running
from tests.servers.kube_real import RealKube
from tests.servers.kube_training import TrainingKubeEmulator

API = "modelferry.io/v1alpha1"
JOB = "modelsync-granite"
POD = f"{JOB}-abcde"


@pytest.fixture
async def harness(kube_backend: Callable[..., Any]) -> AsyncIterator[Harness]:
    async with running(kube_backend(training=True, garbage_collect=False)) as h:
        yield h


def emu(h: Harness) -> TrainingKubeEmulator | RealKube:
    assert isinstance(h.emu, TrainingKubeEmulator | RealKube)
    return h.emu


async def running_pod(h: Harness) -> None:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD, "namespace": NS, "labels": h.pod_labels(JOB)},
        "status": {"phase": "Running", "containerStatuses": [{"name": "sync", "state": {"running": {}}}]},
    }
    await h.emu.put_object("v1", "pods", pod)


def line(files_done: int, bytes_done: int, eta: float | None) -> str:
    snap = {"files_done": files_done, "files_total": 4, "bytes_done": bytes_done, "bytes_total": 400,
            "rate_bytes_per_s": 100, "eta_s": eta}  # fmt: skip
    return format_progress_line(snap)


async def start_running(h: Harness, **settings: Any) -> None:
    for obj in (TARGET, HF):
        await h.apply(obj)
    await h.apply(modelsync(), API, "modelsyncs")
    await h.start(**settings)
    await eventually(lambda: h.job(JOB))
    await running_pod(h)
    await h.emu.set_status("batch/v1", "jobs", NS, JOB, {"active": 1, "startTime": "2026-01-01T00:00:00Z"})


async def test_running_status_follows_the_progress_log(harness: Harness) -> None:
    e = emu(harness)
    e.logs[(NS, POD, "sync")] = "\n".join(
        ['{"level":"info","msg":"planning"}', line(1, 100, 3.0), "MODELFERRY_PROGRESS {torn"]
    )
    await start_running(harness, sync_progress_seconds=0.2)
    status = await eventually(lambda: (s := ms_status(harness)).get("phase") == "Running" and "percent" in s and s)
    assert (status["filesDone"], status["filesTotal"], status["bytesDone"], status["bytesTotal"]) == (1, 4, 100, 400)
    assert status["percent"] == 25.0 and status["etaSeconds"] == 3.0 and status["rateBytesPerSecond"] == 100
    assert all("container=sync" in q for q in e.log_requests)
    # A later line moves the status on without any watch event: the reconciler requeues itself.
    e.logs[(NS, POD, "sync")] += "\n" + line(3, 300, 1.0)
    status = await eventually(lambda: (s := ms_status(harness)).get("bytesDone") == 300 and s)
    assert status["percent"] == 75.0 and status["filesDone"] == 3
    # The termination message is the final word once the Job ends; live-only fields go away.
    summary = {"status": "complete", "revision": "abc", "files": 4, "bytes": 400, "files_copied": 4,
               "bytes_copied": 400, "files_skipped": 0, "bytes_skipped": 0}  # fmt: skip
    pod = harness.emu.get("v1", "pods", NS, POD)
    assert pod is not None
    pod["status"] = {"phase": "Succeeded", "containerStatuses": [
        {"name": "sync", "state": {"terminated": {"exitCode": 0, "message": json.dumps(summary)}}}]}  # fmt: skip
    await harness.emu.put_object("v1", "pods", pod)
    await harness.emu.set_status(
        "batch/v1", "jobs", NS, JOB,
        {"succeeded": 1, "completionTime": "2026-01-01T00:00:10Z", "conditions": [{"type": "Complete", "status": "True"}]},
    )  # fmt: skip
    status = await eventually(lambda: (s := ms_status(harness)).get("phase") == "Succeeded" and s)
    assert status["bytesDone"] == 400 and "etaSeconds" not in status and "percent" not in status


@pytest.mark.emulator_only(
    "a running Job's startTime is immutable on a real server; this test moves it to see reconciles"
)
async def test_log_is_read_at_most_once_per_interval(harness: Harness) -> None:
    e = emu(harness)
    e.logs[(NS, POD, "sync")] = line(2, 200, None)
    await start_running(harness, sync_progress_seconds=3600)
    status = await eventually(lambda: (s := ms_status(harness)).get("bytesDone") == 200 and s)
    assert "etaSeconds" not in status  # unknown ETA is left out, not written as null
    reads = len(e.log_requests)
    # Unrelated changes trigger reconciles; they reuse the cached report instead of reading the log again.
    for n in range(3):
        await harness.emu.set_status("batch/v1", "jobs", NS, JOB, {"active": 1, "startTime": f"2026-01-01T00:00:0{n}Z"})
    await eventually(lambda: ms_status(harness).get("startTime") == "2026-01-01T00:00:02Z")
    assert len(e.log_requests) == reads == 1


async def test_no_progress_line_keeps_plain_running_status(harness: Harness) -> None:
    emu(harness).logs[(NS, POD, "sync")] = "starting\nMODELFERRY_PROGRESS [1, 2]\n"
    await start_running(harness, sync_progress_seconds=0.1)
    await eventually(lambda: len(emu(harness).log_requests) >= 2)
    status = ms_status(harness)
    assert status.get("phase") == "Running"
    assert "bytesDone" not in status and "percent" not in status
