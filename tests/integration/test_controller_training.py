"""TrainingRun -> Job/Service/PyTorchJob -> status, against the API emulator with the real client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.servers.kube_controller import NS, Harness, eventually
from tests.servers.kube_real import RealKube
from tests.servers.kube_training import TrainingKubeEmulator

API = "modelferry.io/v1alpha1"
JOB = "qwen-lora-train"
FAST = {"progress_seconds": 0.1}
# The controller's own check stays (a CRD installed without the enum, an older CRD); a real server never
# lets such a TrainingRun in: tests/integration/test_envtest_only.py pins the admission error instead.
CRD_ENUM = pytest.mark.emulator_only("the CRD's spec.trainer.runtime enum rejects the value at admission")


def trainingrun(name: str = "qwen-lora", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "baseModel": {"uri": "s3://models/Qwen2.5-0.5B", "secretRef": "demo-models"},
        "dataset": {"uri": "s3://datasets/train.jsonl", "secretRef": "demo-models"},
        "trainer": {"image": "quay.io/acme/trainer:1", "command": ["python", "train.py"], "args": ["--fast"]},
        "hyperparameters": {"learning_rate": 0.0002, "num_train_epochs": 1},
        "mlflow": {"trackingUri": "http://mlflow:5000", "experiment": "qwen"},
        "output": {"uri": "s3://fine-tuned/qwen-lora", "secretRef": "demo-models"},
    }
    base.update(spec)
    return {"apiVersion": API, "kind": "TrainingRun", "metadata": {"name": name, "namespace": NS}, "spec": base}


async def make_harness(**kw: Any) -> Harness:
    emu = TrainingKubeEmulator(garbage_collect=False, **kw)
    await emu.start()
    return Harness(emu)


@pytest.fixture
async def harness(kube_backend: Callable[..., Any]) -> AsyncIterator[Harness]:
    h = Harness(kube_backend(training=True, garbage_collect=False))
    await h.emu.start()
    try:
        yield h
    finally:
        await h.close()
        await h.emu.stop()


@pytest.fixture
async def kubeflow() -> AsyncIterator[Harness]:
    h = await make_harness(kubeflow=True)
    try:
        yield h
    finally:
        await h.close()
        await h.emu.stop()


@pytest.fixture
async def trainer_v2() -> AsyncIterator[Harness]:
    h = await make_harness(kubeflow=True, trainer=True)
    try:
        yield h
    finally:
        await h.close()
        await h.emu.stop()


def tr_status(h: Harness, name: str = "qwen-lora") -> dict[str, Any]:
    return (h.emu.get(API, "trainingruns", NS, name) or {}).get("status") or {}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def emu(h: Harness) -> TrainingKubeEmulator | RealKube:
    assert isinstance(h.emu, TrainingKubeEmulator | RealKube)
    return h.emu


async def put_pod(
    h: Harness, *, terminated: dict[str, Any] | None = None, index: str | None = None, phase: str | None = None
) -> str:
    name = f"{JOB}-abcde"
    labels = h.pod_labels(JOB)
    if index is not None:
        labels["batch.kubernetes.io/job-completion-index"] = index
    state = {"terminated": terminated} if terminated else {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "status": {
            "phase": phase
            or (("Succeeded" if terminated.get("exitCode") == 0 else "Failed") if terminated else "Running"),
            "containerStatuses": [{"name": "trainer", "state": {}}, {"name": "sidecar", "state": state}],
        },
    }
    await h.emu.put_object("v1", "pods", pod)
    return name


async def set_job(h: Harness, status: dict[str, Any], name: str = JOB) -> None:
    await h.emu.set_status("batch/v1", "jobs", NS, name, status)


async def test_happy_path_progress_then_succeeded(harness: Harness) -> None:
    await harness.apply(trainingrun(), API, "trainingruns")
    await harness.start(training=FAST)
    job = await eventually(lambda: harness.job(JOB))
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["trainer", "sidecar"]
    assert pod["containers"][0]["image"] == "quay.io/acme/trainer:1"
    sidecar_env = {e["name"]: e for e in pod["containers"][1]["env"]}
    assert sidecar_env["MODELFERRY_SIDECAR_OUTPUT_URI"]["value"] == "s3://fine-tuned/qwen-lora"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "TrainingRun"
    assert job["metadata"]["annotations"]["modelferry.io/inputs-hash"]
    await eventually(lambda: tr_status(harness).get("phase") == "Pending")
    assert condition(tr_status(harness), "Ready")["status"] == "True"
    await eventually(lambda: harness.events("JobCreated"))

    # Running: progress comes from the sidecar's newest MODELFERRY_PROGRESS log line.
    pod_name = await put_pod(harness)
    report = {
        "progress": {"step": 5, "totalSteps": 10, "percent": 50.0, "metrics": {"loss": 1.25}},
        "mlflowRunId": "r1",
    }
    emu(harness).logs[(NS, pod_name, "sidecar")] = (
        'MODELFERRY_PROGRESS {"progress": {"step": 1}}\n{"level": "info"}\nMODELFERRY_PROGRESS ' + json.dumps(report)
    )
    await set_job(harness, {"active": 1, "startTime": "2026-01-01T00:00:00Z"})
    status = await eventually(lambda: (s := tr_status(harness)).get("progress", {}).get("step") == 5 and s)
    assert status["phase"] == "Running" and status["mlflowRunId"] == "r1"
    assert status["progress"]["metrics"] == {"loss": 1.25}
    assert any("container=sidecar" in r for r in emu(harness).log_requests)

    # Done: the termination message carries the MLflow run id and the output URI.
    message = {"phase": "Succeeded", "reason": "Completed", "message": "adapter uploaded", "exitCode": 0,
               "outputUri": "s3://fine-tuned/qwen-lora", "mlflowRunId": "run-123",
               "progress": {"step": 10, "totalSteps": 10, "percent": 100.0}}  # fmt: skip
    await put_pod(harness, terminated={"exitCode": 0, "message": json.dumps(message)})
    await set_job(harness, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    status = await eventually(lambda: (s := tr_status(harness)).get("phase") == "Succeeded" and s)
    assert status["outputUri"] == "s3://fine-tuned/qwen-lora"
    assert status["mlflowRunId"] == "run-123"
    assert status["progress"]["percent"] == 100.0
    assert status["jobName"] == JOB and status["observedGeneration"] == 1
    assert condition(status, "Complete")["status"] == "True"
    events = await eventually(lambda: harness.events("TrainingSucceeded"))
    assert "s3://fine-tuned/qwen-lora" in events[0]["message"]


async def test_failed_job_reports_sidecar_reason(harness: Harness) -> None:
    await harness.apply(trainingrun(), API, "trainingruns")
    await harness.start(training=FAST)
    await eventually(lambda: harness.job(JOB))
    message = {"phase": "Failed", "reason": "Stalled", "message": "trainer made no progress for 600s", "exitCode": 1}
    await put_pod(harness, terminated={"exitCode": 1, "message": json.dumps(message)})
    await set_job(harness, {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]})  # fmt: skip
    status = await eventually(lambda: (s := tr_status(harness)).get("phase") == "Failed" and s)
    complete = condition(status, "Complete")
    assert complete["status"] == "False" and complete["reason"] == "Stalled"
    assert "no progress" in complete["message"]
    events = await eventually(lambda: harness.events("TrainingFailed"))
    assert "Stalled" in events[0]["message"]


async def test_failed_job_without_message_uses_job_condition(harness: Harness) -> None:
    await harness.apply(trainingrun(), API, "trainingruns")
    await harness.start(training=FAST)
    await eventually(lambda: harness.job(JOB))
    failed = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer"}
    await set_job(harness, {"failed": 1, "conditions": [failed]})
    status = await eventually(lambda: (s := tr_status(harness)).get("phase") == "Failed" and s)
    assert condition(status, "Complete")["reason"] == "DeadlineExceeded"


@pytest.mark.parametrize(
    ("spec", "reason", "phase"),
    [
        ({"output": {"uri": "hf://org/out"}}, "InvalidURI", "Failed"),
        ({"dataset": {"uri": "s3://"}}, "InvalidURI", "Failed"),
        pytest.param({"trainer": {"runtime": "cohere-commandr"}}, "RuntimeNotSupported", "Failed", marks=CRD_ENUM),
        ({"trainer": {"image": "x"}}, "InvalidSpec", "Failed"),
        ({"baseModel": {"modelSyncRef": {"name": "missing"}}}, "BaseModelNotReady", "Pending"),
    ],
)
async def test_bad_input_sets_ready_false_without_job(
    harness: Harness, spec: dict[str, Any], reason: str, phase: str
) -> None:
    await harness.apply(trainingrun(**spec), API, "trainingruns")
    controller = await harness.start(training=FAST)
    status = await eventually(lambda: (s := tr_status(harness)).get("conditions") and s)
    ready = condition(status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == reason and ready["message"]
    assert status["phase"] == phase
    events = await eventually(lambda: harness.events(reason))
    assert events[0]["type"] == "Warning" and "no Job was created" in events[0]["message"]
    assert harness.job(JOB) is None
    key = ("TrainingRun", NS, "qwen-lora")
    await harness.reconciled(controller, key, harness.emu.get(API, "trainingruns", NS, "qwen-lora") or {})
    writes = len([r for r in harness.emu.requests if "/status" in r[1]])
    # no status-write loop on a bad input: a reconcile that saw the status it wrote does not rewrite it
    await harness.reconciled(controller, key, harness.emu.get(API, "trainingruns", NS, "qwen-lora") or {})
    assert len([r for r in harness.emu.requests if "/status" in r[1]]) == writes


@CRD_ENUM
async def test_invalid_spec_edit_removes_running_job(harness: Harness) -> None:
    await harness.apply(trainingrun(), API, "trainingruns")
    await harness.start(training=FAST)
    await eventually(lambda: harness.job(JOB))
    await harness.apply(trainingrun(trainer={"runtime": "nope"}), API, "trainingruns")
    await eventually(lambda: harness.job(JOB) is None)
    await eventually(lambda: condition(tr_status(harness), "Ready").get("reason") == "RuntimeNotSupported")


async def test_spec_change_replaces_job_and_unchanged_does_nothing(harness: Harness) -> None:
    await harness.apply(trainingrun(), API, "trainingruns")
    controller = await harness.start(training=FAST)
    first = await eventually(lambda: harness.job(JOB))
    await eventually(lambda: tr_status(harness).get("phase") == "Pending")
    posts = [r for r in harness.emu.requests if r[0] in ("POST", "DELETE") and "/jobs" in r[1]]
    # Unchanged spec (a label edit): the Job stays, nothing is created or deleted.
    same = trainingrun()
    same["metadata"]["labels"] = {"team": "nlp"}
    await harness.apply(same, API, "trainingruns")
    await harness.reconciled(controller, ("TrainingRun", NS, "qwen-lora"), same)
    assert harness.job(JOB)["metadata"]["uid"] == first["metadata"]["uid"]  # type: ignore[index]
    assert [r for r in harness.emu.requests if r[0] in ("POST", "DELETE") and "/jobs" in r[1]] == posts
    # A spec change: the Job is replaced with the new inputs hash.
    await harness.apply(trainingrun(hyperparameters={"learning_rate": 0.001}), API, "trainingruns")
    second = await eventually(
        lambda: (j := harness.job(JOB)) and j["metadata"]["uid"] != first["metadata"]["uid"] and j
    )
    key = "modelferry.io/inputs-hash"
    assert second["metadata"]["annotations"][key] != first["metadata"]["annotations"][key]
    await eventually(lambda: harness.events("JobReplaced"))
    await eventually(lambda: tr_status(harness).get("observedGeneration") == 2)


async def test_distributed_renders_indexed_job_and_headless_service(harness: Harness) -> None:
    await harness.apply(trainingrun(distributed={"workers": 3, "gpusPerWorker": 2}), API, "trainingruns")
    await harness.start(training=FAST)
    job = await eventually(lambda: harness.job(JOB))
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 3
    service = await eventually(lambda: harness.emu.get("v1", "services", NS, JOB))
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["ownerReferences"][0]["kind"] == "TrainingRun"
    # Only rank 0's termination message counts.
    message = {"phase": "Succeeded", "outputUri": "s3://fine-tuned/qwen-lora", "mlflowRunId": "rank0"}
    await put_pod(harness, terminated={"exitCode": 0, "message": json.dumps(message)}, index="0")
    await set_job(harness, {"succeeded": 3, "conditions": [{"type": "Complete", "status": "True"}]})
    status = await eventually(lambda: (s := tr_status(harness)).get("phase") == "Succeeded" and s)
    assert status["mlflowRunId"] == "rank0"
    # Back to one worker: the Service goes away.
    await harness.apply(trainingrun(), API, "trainingruns")
    await eventually(lambda: harness.emu.get("v1", "services", NS, JOB) is None)


async def test_distributed_uses_pytorchjob_when_served(kubeflow: Harness) -> None:
    await kubeflow.apply(trainingrun(distributed={"workers": 2}), API, "trainingruns")
    await kubeflow.start(training=FAST)
    ptj = await eventually(lambda: kubeflow.emu.get("kubeflow.org/v1", "pytorchjobs", NS, JOB))
    assert ptj["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    assert kubeflow.job(JOB) is None
    await kubeflow.emu.set_status(
        "kubeflow.org/v1",
        "pytorchjobs",
        NS,
        JOB,
        {"conditions": [{"type": "Failed", "status": "True", "reason": "OOM"}]},
    )
    await eventually(lambda: tr_status(kubeflow).get("phase") == "Failed")
    await kubeflow.emu.remove(API, "trainingruns", NS, "qwen-lora")
    await eventually(lambda: kubeflow.emu.get("kubeflow.org/v1", "pytorchjobs", NS, JOB) is None)


async def test_pytorchjob_setting_off_forces_indexed_job(kubeflow: Harness) -> None:
    await kubeflow.apply(trainingrun(distributed={"workers": 2}), API, "trainingruns")
    await kubeflow.start(training={**FAST, "pytorchjob": False})
    job = await eventually(lambda: kubeflow.job(JOB))
    assert job["spec"]["completionMode"] == "Indexed"
    assert kubeflow.emu.get("kubeflow.org/v1", "pytorchjobs", NS, JOB) is None


async def test_deletion_cleans_up(harness: Harness) -> None:
    await harness.apply(trainingrun(distributed={"workers": 2}), API, "trainingruns")
    await harness.start(training=FAST)
    await eventually(lambda: harness.job(JOB) and harness.emu.get("v1", "services", NS, JOB))
    await harness.emu.remove(API, "trainingruns", NS, "qwen-lora")
    await eventually(lambda: harness.job(JOB) is None and harness.emu.get("v1", "services", NS, JOB) is None)


async def test_modelsync_reference_waits_for_sync(harness: Harness) -> None:
    ms = {"apiVersion": API, "kind": "ModelSync", "metadata": {"name": "qwen", "namespace": NS},
          "spec": {"source": {"uri": "hf://Qwen/Qwen2.5-0.5B"}, "target": {"uri": "s3://models/qwen"}}}  # fmt: skip
    await harness.apply(ms, API, "modelsyncs")
    await harness.apply(trainingrun(baseModel={"modelSyncRef": {"name": "qwen"}}), API, "trainingruns")
    await harness.start(training=FAST)
    await eventually(lambda: condition(tr_status(harness), "Ready").get("reason") == "BaseModelNotReady")
    assert harness.job(JOB) is None
    await eventually(lambda: harness.job("modelsync-qwen"))
    await set_job(harness, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}, "modelsync-qwen")
    job = await eventually(lambda: harness.job(JOB))
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][1]["env"]}
    assert env["MODELFERRY_SIDECAR_BASE_MODEL_URI"] == "s3://models/qwen"


async def test_pytorchjob_setting_on_watches_pytorchjobs(kubeflow: Harness) -> None:
    await kubeflow.apply(trainingrun(distributed={"workers": 2}), API, "trainingruns")
    await kubeflow.start(training={"progress_seconds": 60, "pytorchjob": True})
    await eventually(lambda: kubeflow.emu.get("kubeflow.org/v1", "pytorchjobs", NS, JOB))
    # No polling (60 s): the PyTorchJob informer sees the status change.
    succeeded = {"conditions": [{"type": "Succeeded", "status": "True"}]}
    await kubeflow.emu.set_status("kubeflow.org/v1", "pytorchjobs", NS, JOB, succeeded)
    await eventually(lambda: tr_status(kubeflow).get("phase") == "Succeeded")


TRAINER = "trainer.kubeflow.org/v1alpha1"


async def test_distributed_uses_trainjob_when_trainer_v2_is_served(trainer_v2: Harness) -> None:
    await trainer_v2.apply(trainingrun(distributed={"workers": 2}), API, "trainingruns")
    await trainer_v2.start(training=FAST)
    trainjob = await eventually(lambda: trainer_v2.emu.get(TRAINER, "trainjobs", NS, JOB))
    runtime = trainer_v2.emu.get(TRAINER, "trainingruntimes", NS, JOB)
    assert runtime is not None and trainjob["spec"]["runtimeRef"]["name"] == JOB
    posts = [path for method, path in trainer_v2.emu.requests if method == "POST" and "trainer.kubeflow.org" in path]
    assert [p.rsplit("/", 1)[-1] for p in posts] == ["trainingruntimes", "trainjobs"]  # the runtime exists first
    assert trainer_v2.job(JOB) is None and trainer_v2.emu.get("kubeflow.org/v1", "pytorchjobs", NS, JOB) is None
    await trainer_v2.emu.set_status(TRAINER, "trainjobs", NS, JOB, {"jobsStatus": [{"name": "node", "active": 2}]})
    await eventually(lambda: tr_status(trainer_v2).get("phase") == "Running")
    done = {"conditions": [{"type": "Complete", "status": "True", "reason": "JobsCompleted"}]}
    await trainer_v2.emu.set_status(TRAINER, "trainjobs", NS, JOB, done)
    await eventually(lambda: tr_status(trainer_v2).get("phase") == "Succeeded")
    await trainer_v2.emu.remove(API, "trainingruns", NS, "qwen-lora")
    await eventually(
        lambda: (
            trainer_v2.emu.get(TRAINER, "trainjobs", NS, JOB) is None
            and trainer_v2.emu.get(TRAINER, "trainingruntimes", NS, JOB) is None
        )
    )


async def test_trainjob_setting_off_falls_back_to_pytorchjob(trainer_v2: Harness) -> None:
    await trainer_v2.apply(trainingrun(distributed={"workers": 2}), API, "trainingruns")
    await trainer_v2.start(training={**FAST, "trainjob": False})
    await eventually(lambda: trainer_v2.emu.get("kubeflow.org/v1", "pytorchjobs", NS, JOB))
    assert trainer_v2.emu.get(TRAINER, "trainjobs", NS, JOB) is None


@pytest.mark.emulator_only(
    "a running Job's startTime is immutable on a real server; this test moves it to see reconciles"
)
async def test_sidecar_log_read_only_while_running_and_at_most_once_per_interval(harness: Harness) -> None:
    await harness.apply(trainingrun(), API, "trainingruns")
    controller = await harness.start(training={"progress_seconds": 3600})
    await eventually(lambda: harness.job(JOB))
    # Scheduled, not started: no log to read. Created Pending (not Running, then Pending): a reconcile
    # between the two writes would have seen a running pod.
    pod_name = await put_pod(harness, phase="Pending")
    emu(harness).logs[(NS, pod_name, "sidecar")] = 'MODELFERRY_PROGRESS {"progress": {"step": 3}}'
    await set_job(harness, {"active": 1, "startTime": "2026-01-01T00:00:00Z"})
    await eventually(lambda: tr_status(harness).get("phase") == "Running")
    assert emu(harness).log_requests == []
    await put_pod(harness)  # Running now
    await eventually(lambda: tr_status(harness).get("progress", {}).get("step") == 3)
    assert len(emu(harness).log_requests) == 1
    # Pod and Job events requeue the run; the cached report answers until the interval has passed.
    op = controller.operator
    before = op.reconciles["TrainingRun"]
    for n in range(3):
        await set_job(harness, {"active": 1, "startTime": f"2026-01-01T00:00:0{n}Z"})
        await eventually(lambda n=n: op.reconciles["TrainingRun"] > before + n)
    await eventually(op.queue.idle.is_set)
    assert len(emu(harness).log_requests) == 1
