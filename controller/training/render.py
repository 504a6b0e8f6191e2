"""Pure rendering of a TrainingRun into the objects that should exist.

One worker: a Job whose pod runs two containers sharing a workspace volume: ``trainer`` (any image,
its command wrapped by the POSIX-sh wrapper) and ``sidecar`` (``modelferry sidecar run --mode pod``).
Both are ordinary containers rather than a native sidecar, because the sidecar must outlive the
trainer to upload the result, and the pod's outcome must be the sidecar's exit status.

More workers: a Kubeflow Trainer v2 ``TrainJob`` (with its own ``TrainingRuntime``) when that API is
served, else a Kubeflow ``PyTorchJob`` (Training Operator v1) when that CRD is installed, else an Indexed
Job with a headless Service and torchrun's environment (``PET_*``) derived from the completion index.
Only rank 0 streams metrics and uploads the output. Claims named by ``pvc://`` URIs are mounted into
the sidecar (which stages and uploads) where the sync engine looks for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from modelferry.backends import SecretUse, secret_keys
from modelferry.controller.api.v1alpha1.trainingrun import EnvVar, TrainingRunSpec, parse_spec
from modelferry.controller.config.controller import IMAGE, TRAIN_IMAGE
from modelferry.controller.kube.expansion import literal
from modelferry.controller.kube.ownership import LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, MANAGED_BY
from modelferry.controller.training.trainjob import train_job, training_runtime
from modelferry.controller.training.validate import Problem, validate
from modelferry.controller.training.wrapper import wrapped_command
from modelferry.controller.workload.cabundle import CASource, mount_ca
from modelferry.controller.workload.claims import ClaimMounts, claim_mounts
from modelferry.controller.workload.identity import bounded_name, inputs_hash, owner_reference
from modelferry.controller.workload.secrets import secret_ref
from modelferry.errors import InvalidSpecError

ANNOTATION_HASH = "modelferry.io/inputs-hash"
WORKSPACE = "/workspace"
MASTER_PORT = 29500
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
MLFLOW_KEYS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_S3_ENDPOINT_URL",
    "MLFLOW_TRACKING_AUTH",  # OpenShift AI 3.x: kubernetes-namespaced
    "MLFLOW_WORKSPACE",
)
SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class RenderContext:
    """Facts about the cluster and the controller's defaults."""

    sidecar_image: str = IMAGE
    train_image: str = TRAIN_IMAGE  # Containerfile.train: the [train] extra and the peft-lora trainer
    has_pytorchjob: bool = False
    has_trainjob: bool = False  # Kubeflow Trainer v2 (trainer.kubeflow.org TrainJob) is served
    model_syncs: dict[str, str] = field(default_factory=dict)  # ModelSync name -> its target URI
    service_account_name: str | None = None
    ca: CASource | None = None  # the trusted CA ConfigMap mounted into the trainer and the sidecar
    allowed_local_roots: tuple[str, ...] = ()  # file:// sources the admin allows (ControllerSettings)


@dataclass
class RenderResult:
    """Either the objects to apply (the workload first) or the problem that stops it."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    problem: Problem | None = None
    kind: str = "Job"  # Job | PyTorchJob | TrainJob


def _secret_env(secret: str | None, prefix: str) -> list[dict[str, Any]]:
    if not secret:
        return []
    # The keys each backend maps for training (modelferry.backends), by optional reference: the controller
    # does not read the Secret, so a key it lacks leaves the setting unset.
    return [
        secret_ref(f"MODELFERRY_SIDECAR_{prefix}{block.upper()}__{name.upper()}", secret, key, optional=True)
        for key, block, name in secret_keys(SecretUse.TRAINING)
    ]


def sidecar_env(spec: TrainingRunSpec, base_uri: str, *, rank_zero_only: bool) -> list[dict[str, Any]]:
    """The sidecar's settings as MODELFERRY_SIDECAR_* variables, secrets by reference only."""
    p = "MODELFERRY_SIDECAR_"
    dataset, output, mlflow, timeouts = spec.dataset, spec.output, spec.mlflow, spec.timeouts
    env: list[dict[str, Any]] = [
        {"name": f"{p}MODE", "value": "pod"},
        {"name": f"{p}WORKSPACE", "value": WORKSPACE},
        # User strings go in literally: Kubernetes expands $(VAR) in env values too (see jobs.literal).
        {"name": f"{p}BASE_MODEL_URI", "value": literal(base_uri)},
        {"name": f"{p}DATASET_URI", "value": literal(dataset.uri)},
        {"name": f"{p}OUTPUT_URI", "value": literal(output.uri)},
        {"name": f"{p}HYPERPARAMETERS", "value": literal(json.dumps(spec.hyperparameters, sort_keys=True))},
        {"name": "MODELFERRY_LOG_FORMAT", "value": "json"},
        {"name": "HOME", "value": "/tmp/home"},  # noqa: S108 - an emptyDir
    ]
    if spec.trainer.runtime:
        env.append({"name": f"{p}RUNTIME", "value": literal(spec.trainer.runtime)})
    for seconds, setting in (
        (timeouts.stall_seconds, "LIFECYCLE__STALL_TIMEOUT"),
        (timeouts.training_seconds, "LIFECYCLE__TIMEOUT"),
    ):
        if seconds:
            env.append({"name": f"{p}{setting}", "value": literal(str(seconds))})
    if mlflow.tracking_uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": literal(mlflow.tracking_uri)})
    if mlflow.experiment:
        env.append({"name": "MLFLOW_EXPERIMENT_NAME", "value": literal(mlflow.experiment)})
    if mlflow.secret_ref:
        env += [secret_ref(k, mlflow.secret_ref, k, optional=True) for k in MLFLOW_KEYS]
    env += _secret_env(dataset.secret_ref or spec.base_model.secret_ref, "SOURCE__")
    env += _secret_env(output.secret_ref, "TARGET__")
    if rank_zero_only:
        env.append(
            {
                "name": f"{p}RANK",
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}},
            }
        )
    return env


def pod_spec(
    spec: TrainingRunSpec,
    ctx: RenderContext,
    base_uri: str,
    *,
    extra_trainer_env: list[dict[str, Any]],
    rank_zero_only: bool,
    claims: ClaimMounts | None = None,
) -> dict[str, Any]:
    """The training pod: trainer + sidecar + the shared workspace (+ the claims the sidecar reads or writes)."""
    claims = claims or ClaimMounts()
    trainer = spec.trainer
    mount = [{"name": "workspace", "mountPath": WORKSPACE}, {"name": "scratch", "mountPath": "/tmp"}]  # noqa: S108
    if trainer.runtime:
        image, command = ctx.train_image, wrapped_command([], [])  # the sidecar writes command.sh
    else:
        # The user's command and args reach the wrapper literally (no $(VAR) expansion; use the shell's $VAR).
        image = trainer.image or ""  # validate() refuses a trainer with neither runtime nor image
        command = wrapped_command([literal(c) for c in trainer.command], [literal(a) for a in trainer.args])
    resources = dict(trainer.resources or {})
    gpus = spec.distributed.gpus_per_worker
    if gpus:
        limits = dict(resources.get("limits") or {})
        limits["nvidia.com/gpu"] = gpus
        resources["limits"] = limits
    mlflow_secret = spec.mlflow.secret_ref
    trainer_env = [
        # the trainer may log to the same run itself (MLFLOW_RUN_ID comes from the sidecar)
        *([secret_ref(k, mlflow_secret, k, optional=True) for k in MLFLOW_KEYS] if mlflow_secret else []),
        {"name": "MODELFERRY_WORKSPACE", "value": WORKSPACE},
        {"name": "HOME", "value": "/tmp/home"},  # noqa: S108
        {"name": "HF_HOME", "value": "/tmp/hf"},  # noqa: S108
        *extra_trainer_env,
        *[_user_env(e) for e in trainer.env],
    ]
    containers = [
        {
            "name": "trainer",
            "image": image,
            "command": command,
            "env": trainer_env,
            "resources": resources,
            "securityContext": SECURITY,
            "volumeMounts": mount,
        },
        {
            "name": "sidecar",
            "image": ctx.sidecar_image,
            "command": ["modelferry", "sidecar", "run"],
            "env": sidecar_env(spec, base_uri, rank_zero_only=rank_zero_only),
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
            "securityContext": {**SECURITY, "readOnlyRootFilesystem": True},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [*mount, *claims.mounts],
        },
    ]
    workspace = spec.workspace
    volume: dict[str, Any] = (
        {"persistentVolumeClaim": {"claimName": workspace.claim_name}}
        if workspace.claim_name
        else {"emptyDir": {"sizeLimit": "50Gi" if workspace.size is None else workspace.size}}
    )
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": containers,
        "volumes": [
            {"name": "workspace", **volume},
            {"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}},
            *claims.volumes,
        ],
    }
    for container in containers:
        container["volumeMounts"] = list(container["volumeMounts"])  # not shared: each gets its own CA mount
    mount_ca(pod, ctx.ca, containers)
    if ctx.service_account_name:
        pod["serviceAccountName"] = ctx.service_account_name
    # Only an MLflow server may need the pod's identity (MLFLOW_TRACKING_AUTH=kubernetes-namespaced on
    # OpenShift AI reads the ServiceAccount token); without MLflow no container gets an API token.
    pod["automountServiceAccountToken"] = bool(spec.mlflow.wire())
    return pod


def _user_env(entry: EnvVar) -> dict[str, Any]:
    """One ``spec.trainer.env`` entry; a literal ``value`` stays literal (``valueFrom`` is passed on)."""
    out = entry.wire()
    if entry.value is not None:
        out["value"] = literal(entry.value)
    return out


def workload_name(run_name: str) -> str:
    """The Job / Service / PyTorchJob name of TrainingRun ``run_name`` (hash-suffixed when too long)."""
    return bounded_name(f"{run_name or 'run'}-train")


def _meta(trainingrun: dict[str, Any], name: str) -> dict[str, Any]:
    meta = trainingrun.get("metadata") or {}
    labels = {
        "app.kubernetes.io/name": "modelferry",
        "app.kubernetes.io/component": "training",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_OWNER_KIND: "TrainingRun",
        LABEL_OWNER_NAME: meta.get("name", ""),
    }
    return {
        "name": name,
        "namespace": meta.get("namespace", "default"),
        "labels": labels,
        "ownerReferences": [owner_reference(trainingrun)],
        "annotations": {},
    }


def _job(
    trainingrun: dict[str, Any], spec: TrainingRunSpec, name: str, pod: dict[str, Any], workers: int
) -> dict[str, Any]:
    meta = _meta(trainingrun, name)
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.timeouts.backoff_limit or 0,
        "podFailurePolicy": {
            "rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "sidecar", "operator": "In", "values": [2, 3]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {"metadata": {"labels": dict(meta["labels"])}, "spec": pod},
    }
    deadline = spec.timeouts.active_deadline_seconds
    if deadline:
        job_spec["activeDeadlineSeconds"] = int(deadline)
    if workers > 1:
        job_spec.update(completions=workers, parallelism=workers, completionMode="Indexed")
        job_spec["backoffLimitPerIndex"] = 0
        job_spec["podFailurePolicy"]["rules"][0]["action"] = "FailIndex"
        pod["subdomain"] = name
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}


def torchrun_env(name: str, namespace: str, workers: int, gpus: int) -> list[dict[str, Any]]:
    """torchrun's rendezvous for an Indexed Job: rank 0's stable DNS name through the headless Service."""
    master = f"{name}-0.{name}.{namespace}.svc"
    per_node = str(max(1, gpus))
    rank = {"valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}}
    return [
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
        {"name": "WORLD_SIZE", "value": str(workers)},
        {"name": "NODE_RANK", **rank},
        {"name": "PET_MASTER_ADDR", "value": master},
        {"name": "PET_MASTER_PORT", "value": str(MASTER_PORT)},
        {"name": "PET_NNODES", "value": str(workers)},
        {"name": "PET_NPROC_PER_NODE", "value": per_node},
        {"name": "PET_NODE_RANK", **rank},
    ]


def render(trainingrun: dict[str, Any], ctx: RenderContext) -> RenderResult:
    """What should exist for TrainingRun ``trainingrun``; a problem (and no objects) for bad inputs."""
    try:
        spec = parse_spec(trainingrun)
    except InvalidSpecError as exc:
        return RenderResult(problem=Problem(exc.reason, str(exc)))
    problem = validate(spec, ctx.model_syncs, ctx.allowed_local_roots)
    if problem is not None:
        return RenderResult(problem=problem)
    ref = spec.base_model.model_sync_ref
    base_uri = spec.base_model.uri or ctx.model_syncs[ref.name if ref else ""]
    meta = trainingrun.get("metadata") or {}
    name = workload_name(meta.get("name", "run"))
    namespace = meta.get("namespace", "default")
    workers, gpus = spec.distributed.workers, spec.distributed.gpus_per_worker
    claims = claim_mounts(
        [
            ("spec.baseModel.uri", base_uri, False),
            ("spec.dataset.uri", spec.dataset.uri, False),
            ("spec.output.uri", spec.output.uri, True),
        ],
        namespace,
    )
    if claims.error:
        return RenderResult(problem=Problem("ClaimNotMountable", claims.error))
    digest = inputs_hash(trainingrun.get("spec") or {}, base_uri)  # the spec as written: an upgrade replaces no Job
    if workers == 1:
        pod = pod_spec(spec, ctx, base_uri, extra_trainer_env=[], rank_zero_only=False, claims=claims)
        job = _job(trainingrun, spec, name, pod, 1)
        job["metadata"]["annotations"][ANNOTATION_HASH] = digest
        return RenderResult(objects=[job])
    if ctx.has_trainjob:  # the Trainer sets PET_* itself; the node job is Indexed, so rank 0 is index 0
        pod = pod_spec(spec, ctx, base_uri, extra_trainer_env=[], rank_zero_only=True, claims=claims)
        runtime_meta, job_meta = _meta(trainingrun, name), _meta(trainingrun, name)
        for meta_ in (runtime_meta, job_meta):
            meta_["annotations"][ANNOTATION_HASH] = digest
        runtime = training_runtime(runtime_meta, pod, workers, gpus)
        return RenderResult(objects=[train_job(job_meta, name, workers), runtime], kind="TrainJob")
    if ctx.has_pytorchjob:
        pytorchjob = _pytorchjob(trainingrun, name, spec, ctx, base_uri, workers, digest, claims)
        return RenderResult(objects=[pytorchjob], kind="PyTorchJob")
    env = torchrun_env(name, namespace, workers, gpus)
    pod = pod_spec(spec, ctx, base_uri, extra_trainer_env=env, rank_zero_only=True, claims=claims)
    job = _job(trainingrun, spec, name, pod, workers)
    job["metadata"]["annotations"][ANNOTATION_HASH] = digest
    service_meta = _meta(trainingrun, name)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": service_meta,
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"job-name": name},
            "ports": [{"name": "rendezvous", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
        },
    }
    return RenderResult(objects=[job, service])


def _pytorchjob(
    trainingrun: dict[str, Any],
    name: str,
    spec: TrainingRunSpec,
    ctx: RenderContext,
    base_uri: str,
    workers: int,
    digest: str,
    claims: ClaimMounts,
) -> dict[str, Any]:
    """Kubeflow's training operator sets MASTER_ADDR/RANK/WORLD_SIZE/PET_* itself; the container must be 'pytorch'."""

    def replica(count: int, rank_zero: bool) -> dict[str, Any]:
        pod = pod_spec(spec, ctx, base_uri, extra_trainer_env=[], rank_zero_only=False, claims=claims)
        pod["containers"][0]["name"] = "pytorch"
        if not rank_zero:  # workers stage and train; only the master streams and uploads
            pod["containers"][1]["env"].append({"name": "MODELFERRY_SIDECAR_RANK", "value": "1"})
        return {"replicas": count, "restartPolicy": "Never", "template": {"spec": pod}}

    meta = _meta(trainingrun, name)
    meta["annotations"][ANNOTATION_HASH] = digest
    gpus = spec.distributed.gpus_per_worker
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": meta,
        "spec": {
            "nprocPerNode": str(max(1, gpus)),
            "runPolicy": {"backoffLimit": 0},
            "pytorchReplicaSpecs": {"Master": replica(1, True), "Worker": replica(workers - 1, False)},
        },
    }
