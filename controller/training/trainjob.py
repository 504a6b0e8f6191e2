"""Kubeflow Trainer v2 rendering (pure): a ``TrainingRuntime`` carrying our pod, and a ``TrainJob`` using it.

A TrainJob's overrides can change the environment and mounts of a runtime's containers but cannot add a
container, and the training sidecar must run beside the trainer. So each distributed TrainingRun gets
its own namespaced ``TrainingRuntime`` (owned by the TrainingRun, removed with it) whose ``node`` job
holds the same two containers as our plain Job: the trainer, named ``node`` as the torch plugin expects
(it sets ``PET_*`` there), and the sidecar. The ``node`` job is an Indexed Job, so rank 0 is found by
the same completion-index annotation, and only rank 0 streams metrics and uploads the output.
"""

from __future__ import annotations

from typing import Any

TRAINER_GROUP = "trainer.kubeflow.org"
TRAINER_VERSION = "v1alpha1"
ANCESTOR_LABEL = f"{TRAINER_GROUP}/trainjob-ancestor-step"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"  # on every pod of a TrainJob (its JobSet has its name)
NODE_JOB = "node"


def training_runtime(meta: dict[str, Any], pod: dict[str, Any], workers: int, gpus: int) -> dict[str, Any]:
    """The TrainingRuntime: torch policy, one ``node`` replicated job running ``pod`` (trainer renamed ``node``)."""
    pod["containers"][0]["name"] = NODE_JOB
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": "TrainingRuntime",
        "metadata": meta,
        "spec": {
            "mlPolicy": {"numNodes": workers, "torch": {"numProcPerNode": max(1, gpus)}},
            "template": {
                "spec": {
                    "replicatedJobs": [
                        {
                            "name": NODE_JOB,
                            "template": {
                                "metadata": {"labels": {ANCESTOR_LABEL: "trainer"}},
                                "spec": {"template": {"metadata": {"labels": dict(meta["labels"])}, "spec": pod}},
                            },
                        }
                    ]
                }
            },
        },
    }


def train_job(meta: dict[str, Any], runtime_name: str, workers: int) -> dict[str, Any]:
    """The TrainJob that runs ``runtime_name`` on ``workers`` nodes."""
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": "TrainJob",
        "metadata": meta,
        "spec": {
            "runtimeRef": {"name": runtime_name, "apiGroup": TRAINER_GROUP, "kind": "TrainingRuntime"},
            "trainer": {"numNodes": workers},
        },
    }
