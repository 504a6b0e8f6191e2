"""TrainingRun -> Job rendering, distributed variants, bad inputs and status mirroring."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelferry.controller.training import RenderContext, compute_status, progress_from_log, render, termination_report
from modelferry.controller.training.wrapper import PROTOCOL_FILES, WRAPPER_SCRIPT
from modelferry.sidecar import supervisor

TR: dict[str, Any] = {
    "apiVersion": "modelferry.io/v1alpha1",
    "kind": "TrainingRun",
    "metadata": {"name": "llama-lora", "namespace": "team-a", "uid": "u-1", "generation": 2},
    "spec": {
        "baseModel": {"uri": "s3://models/llama-3-8b"},
        "dataset": {"uri": "s3://data/train.jsonl", "secretRef": "data-conn"},
        "trainer": {"runtime": "peft-lora"},
        "hyperparameters": {"num_train_epochs": 3, "learning_rate": 0.0002},
        "mlflow": {"trackingUri": "http://mlflow.mlflow:5000", "experiment": "llama"},
        "output": {"uri": "s3://out/runs/llama-lora", "secretRef": "out-conn"},
    },
}


def tr_with(**spec: Any) -> dict[str, Any]:
    tr = copy.deepcopy(TR)
    tr["spec"].update(spec)
    return tr


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_single_worker_renders_one_job_with_trainer_and_sidecar() -> None:
    result = render(TR, RenderContext())
    assert result.problem is None
    [job] = result.objects
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == "llama-lora-train"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    pod = job["spec"]["template"]["spec"]
    trainer, sidecar = pod["containers"]
    assert trainer["name"] == "trainer"
    assert trainer["command"][:2] == ["/bin/sh", "-c"]
    assert sidecar["command"] == ["modelferry", "sidecar", "run"]
    env = env_of(sidecar)
    assert env["MODELFERRY_SIDECAR_MODE"] == "pod"
    assert env["MODELFERRY_SIDECAR_RUNTIME"] == "peft-lora"
    assert env["MODELFERRY_SIDECAR_BASE_MODEL_URI"] == "s3://models/llama-3-8b"
    assert env["MODELFERRY_SIDECAR_OUTPUT_URI"] == "s3://out/runs/llama-lora"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow:5000"
    assert env["MODELFERRY_SIDECAR_SOURCE__S3__SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "data-conn", "key": "AWS_SECRET_ACCESS_KEY", "optional": True}
    }
    assert env["MODELFERRY_SIDECAR_TARGET__S3__ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "out-conn"
    for c in pod["containers"]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "workspace", "mountPath": "/workspace"} in c["volumeMounts"]
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"] == {"containerName": "sidecar", "operator": "In", "values": [2, 3]}
    assert "modelferry.io/inputs-hash" in job["metadata"]["annotations"]


def test_custom_image_wraps_command_and_args_and_sets_gpus() -> None:
    tr = tr_with(
        trainer={
            "image": "ghcr.io/me/train:1",
            "command": ["python", "train.py"],
            "args": ["--x", "1"],
            "env": [{"name": "FOO", "value": "bar"}],
            "resources": {"requests": {"cpu": "2"}},
        },
        distributed={"workers": 1, "gpusPerWorker": 2},
    )
    [job] = render(tr, RenderContext()).objects
    trainer = job["spec"]["template"]["spec"]["containers"][0]
    assert trainer["image"] == "ghcr.io/me/train:1"
    assert trainer["command"][2] == WRAPPER_SCRIPT
    assert trainer["command"][3:] == ["modelferry-wrapper", "python", "train.py", "--x", "1"]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert env_of(trainer)["FOO"] == "bar"


def test_inputs_hash_changes_with_the_spec() -> None:
    a = render(TR, RenderContext()).objects[0]["metadata"]["annotations"]["modelferry.io/inputs-hash"]
    b = render(tr_with(hyperparameters={"num_train_epochs": 4}), RenderContext()).objects[0]
    assert a != b["metadata"]["annotations"]["modelferry.io/inputs-hash"]


def test_distributed_without_kubeflow_is_an_indexed_job_with_a_headless_service() -> None:
    result = render(tr_with(distributed={"workers": 3, "gpusPerWorker": 4}), RenderContext())
    job, service = result.objects
    assert result.kind == "Job"
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == "llama-lora-train" == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"job-name": "llama-lora-train"}
    env = env_of(pod["containers"][0])
    assert env["PET_MASTER_ADDR"] == "llama-lora-train-0.llama-lora-train.team-a.svc"
    assert env["PET_NNODES"] == "3"
    assert env["PET_NPROC_PER_NODE"] == "4"
    assert "job-completion-index" in env["PET_NODE_RANK"]["fieldRef"]["fieldPath"]
    assert "job-completion-index" in env_of(pod["containers"][1])["MODELFERRY_SIDECAR_RANK"]["fieldRef"]["fieldPath"]


def test_distributed_with_kubeflow_is_a_pytorchjob() -> None:
    result = render(tr_with(distributed={"workers": 4, "gpusPerWorker": 8}), RenderContext(has_pytorchjob=True))
    [pj] = result.objects
    assert result.kind == "PyTorchJob"
    specs = pj["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1
    assert specs["Worker"]["replicas"] == 3
    assert specs["Master"]["template"]["spec"]["containers"][0]["name"] == "pytorch"
    worker_sidecar = specs["Worker"]["template"]["spec"]["containers"][1]
    assert env_of(worker_sidecar)["MODELFERRY_SIDECAR_RANK"] == "1"


def test_model_sync_reference_resolves_to_its_target() -> None:
    tr = tr_with(baseModel={"modelSyncRef": {"name": "llama"}})
    [job] = render(tr, RenderContext(model_syncs={"llama": "s3://models/llama"})).objects
    sidecar = job["spec"]["template"]["spec"]["containers"][1]
    assert env_of(sidecar)["MODELFERRY_SIDECAR_BASE_MODEL_URI"] == "s3://models/llama"


@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        ({"baseModel": {}}, "InvalidSpec", "baseModel"),
        ({"baseModel": {"uri": "ftp://x/y"}}, "InvalidURI", "baseModel.uri"),
        ({"baseModel": {"modelSyncRef": {"name": "nope"}}}, "BaseModelNotReady", "nope"),
        ({"dataset": {}}, "InvalidSpec", "dataset.uri"),
        ({"output": {"uri": "hf://org/model"}}, "InvalidURI", "cannot be written"),
        ({"trainer": {}}, "InvalidSpec", "runtime"),
        ({"trainer": {"runtime": "cohere-command"}}, "RuntimeNotSupported", "not supported"),
        ({"trainer": {"runtime": "axolotl"}}, "RuntimeNotSupported", "unknown runtime"),
        ({"trainer": {"image": "x"}}, "InvalidSpec", "command"),
        ({"trainer": {"image": "x", "command": ["a"], "runtime": "peft-lora"}}, "InvalidSpec", "not both"),
        ({"distributed": {"workers": 0}}, "InvalidSpec", "workers"),
        ({"distributed": {"gpusPerWorker": -1}}, "InvalidSpec", "gpusPerWorker"),
        ({"hyperparameters": {"a": {"b": 1}}}, "InvalidSpec", "scalar"),
        ({"mlflow": {"trackingUri": "file:///tmp/x"}}, "InvalidSpec", "http"),
    ],
)
def test_bad_inputs_give_a_reason_and_no_objects(spec: dict[str, Any], reason: str, words: str) -> None:
    result = render(tr_with(**spec), RenderContext())
    assert result.objects == []
    assert result.problem is not None
    assert result.problem.reason == reason
    assert words in result.problem.message
    status = compute_status(tr_with(**spec), None, problem=result.problem, now="t")
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", reason)


def job_with(cond: str | None, active: int = 0) -> dict[str, Any]:
    status: dict[str, Any] = {"active": active}
    if cond:
        status["conditions"] = [{"type": cond, "status": "True"}]
    return {"metadata": {"name": "llama-lora-train"}, "status": status}


def test_status_mirrors_progress_while_running_and_the_result_at_the_end() -> None:
    log = 'noise\nMODELFERRY_PROGRESS {"progress": {"step": 5, "percent": 50.0, "etaSeconds": 12.0, "metrics": {"loss": 1.5}}, "mlflowRunId": "abc"}\n{"msg":"x"}\n'
    report = progress_from_log(log)
    assert report is not None
    running = compute_status(TR, job_with(None, active=1), report=report, now="t1")
    assert running["phase"] == "Running"
    assert running["progress"]["percent"] == 50.0
    assert running["mlflowRunId"] == "abc"
    tr = {**TR, "status": running}
    pod = {
        "status": {
            "containerStatuses": [
                {
                    "name": "sidecar",
                    "state": {
                        "terminated": {
                            "message": '{"phase": "Succeeded", "reason": "Completed", "outputUri": "s3://out/runs/llama-lora", "progress": {"step": 10, "percent": 100.0}}'
                        }
                    },
                }
            ]
        }
    }
    done = compute_status(tr, job_with("Complete"), report=termination_report(pod), now="t2")
    assert done["phase"] == "Succeeded"
    assert done["outputUri"] == "s3://out/runs/llama-lora"
    assert done["mlflowRunId"] == "abc"  # kept from the running report
    assert done["progress"]["percent"] == 100.0
    ready = next(c for c in done["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "t1"  # unchanged status keeps its time
    failed = compute_status(TR, job_with("Failed"), report={"reason": "Stalled", "message": "no progress"}, now="t")
    complete = next(c for c in failed["conditions"] if c["type"] == "Complete")
    assert (failed["phase"], complete["reason"]) == ("Failed", "Stalled")


def test_progress_from_log_ignores_garbage() -> None:
    assert progress_from_log("MODELFERRY_PROGRESS {not json\nplain") is None
    assert termination_report({"status": {"containerStatuses": [{"name": "sidecar", "state": {}}]}}) is None


def test_sidecar_and_wrapper_agree_on_the_protocol() -> None:
    assert set(PROTOCOL_FILES) == set(supervisor.PROTOCOL_FILES)
    for name in PROTOCOL_FILES:
        assert f'"$ctl/{name}"' in WRAPPER_SCRIPT


def test_the_rendered_sidecar_env_is_understood_by_the_sidecar(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelferry.sidecar.settings import SidecarSettings

    tr = tr_with(timeouts={"stallSeconds": 600, "trainingSeconds": 3600})
    [job] = render(tr, RenderContext()).objects
    sidecar = job["spec"]["template"]["spec"]["containers"][1]
    for e in sidecar["env"]:
        if "value" in e and e["name"].startswith("MODELFERRY_SIDECAR_"):
            monkeypatch.setenv(e["name"], e["value"])
    monkeypatch.setenv("MODELFERRY_SIDECAR_SOURCE__S3__ACCESS_KEY_ID", "AKIA")  # what the secretKeyRef gives
    s = SidecarSettings()
    assert s.mode == "pod"
    assert s.runtime == "peft-lora"
    assert s.base_model_uri == "s3://models/llama-3-8b"
    assert s.output_uri == "s3://out/runs/llama-lora"
    assert s.hyperparameters == {"learning_rate": 0.0002, "num_train_epochs": 3}
    assert s.lifecycle.stall_timeout == 600
    assert s.lifecycle.timeout == 3600
    assert s.source.s3.access_key_id == "AKIA"


def test_distributed_with_trainer_v2_is_a_trainjob_with_its_own_runtime() -> None:
    ctx = RenderContext(has_trainjob=True, has_pytorchjob=True)  # Trainer v2 wins where both are served
    result = render(tr_with(distributed={"workers": 4, "gpusPerWorker": 8}), ctx)
    assert result.problem is None
    assert result.kind == "TrainJob"
    trainjob, runtime = result.objects
    assert trainjob["apiVersion"] == runtime["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert trainjob["spec"]["runtimeRef"] == {
        "name": "llama-lora-train",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
    }
    assert runtime["metadata"]["name"] == "llama-lora-train"
    assert trainjob["spec"]["trainer"]["numNodes"] == 4
    assert runtime["spec"]["mlPolicy"] == {"numNodes": 4, "torch": {"numProcPerNode": 8}}
    for obj in (trainjob, runtime):  # both owned by the run and replaced when its inputs change
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "u-1"
        assert obj["metadata"]["annotations"]["modelferry.io/inputs-hash"]
    [node] = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    assert node["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    pod = node["template"]["spec"]["template"]["spec"]
    trainer, sidecar = pod["containers"]
    assert trainer["name"] == "node"  # the torch plugin sets PET_* in the container named node
    assert not any(e["name"].startswith("PET_") for e in trainer["env"])  # ... so we set none ourselves
    assert sidecar["command"] == ["modelferry", "sidecar", "run"]
    rank = env_of(sidecar)["MODELFERRY_SIDECAR_RANK"]
    assert "job-completion-index" in rank["fieldRef"]["fieldPath"]  # only index 0 streams and uploads


def test_single_worker_stays_a_plain_job_with_trainer_v2() -> None:
    result = render(TR, RenderContext(has_trainjob=True))
    assert result.kind == "Job"
    assert [o["kind"] for o in result.objects] == ["Job"]


def test_trainjob_phase_follows_its_jobs_status() -> None:
    tr = copy.deepcopy(TR)
    running = {"status": {"jobsStatus": [{"name": "node", "active": 2, "ready": 2}]}}
    assert compute_status(tr, {"metadata": {"name": "x"}, **running})["phase"] == "Running"
    created = {"status": {"conditions": [{"type": "Created", "status": "True"}]}}
    assert compute_status(tr, {"metadata": {"name": "x"}, **created})["phase"] == "Pending"
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert compute_status(tr, {"metadata": {"name": "x"}, **done})["phase"] == "Succeeded"


def claim_volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["persistentVolumeClaim"]["claimName"]: v for v in pod["volumes"] if "persistentVolumeClaim" in v}


@pytest.mark.parametrize("workers", [1, 3])
def test_pvc_uris_mount_their_claims_into_the_sidecar(workers: int) -> None:
    tr = tr_with(
        baseModel={"uri": "pvc://models/llama"},
        dataset={"uri": "pvc://team-a:data/train.jsonl"},
        output={"uri": "pvc://models/runs/llama-lora"},
        distributed={"workers": workers},
    )
    result = render(tr, RenderContext())
    assert result.problem is None
    pod = result.objects[0]["spec"]["template"]["spec"]
    volumes = claim_volumes(pod)
    assert volumes["data"]["persistentVolumeClaim"]["readOnly"] is True  # only read
    assert volumes["models"]["persistentVolumeClaim"]["readOnly"] is False  # the output is written there
    trainer, sidecar = pod["containers"]
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    # the sync engine opens pvc://claim/sub at MODELFERRY_PVC_ROOT/claim/sub (default /mnt/pvc)
    assert mounts["/mnt/pvc/data"]["readOnly"] is True
    assert mounts["/mnt/pvc/models"]["readOnly"] is False
    assert not any(m["mountPath"].startswith("/mnt/pvc") for m in trainer["volumeMounts"])


def test_pvc_of_another_namespace_is_refused() -> None:
    result = render(tr_with(dataset={"uri": "pvc://team-b:data/train.jsonl"}), RenderContext())
    assert result.objects == []
    assert result.problem is not None
    assert result.problem.reason == "ClaimNotMountable"
    assert "spec.dataset.uri" in result.problem.message
    assert "team-b" in result.problem.message and "team-a" in result.problem.message
