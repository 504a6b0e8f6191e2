"""ModelServer rendering: every engine preset with a node-cached model, a bucket model and an adapter;
the CRD schema and its examples; escaping, security, probes and placement."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelferry.controller.kube.expansion import literal
from modelferry.controller.serving.inputs import ServingContext
from modelferry.controller.serving.presets import ADAPTER_PATH, MODEL_PATH
from modelferry.controller.serving.render import render
from tests.unit.test_operator_training import controller_grants

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("modelserver-*.yaml"))
ENGINES = ["vllm", "tgi", "llama-cpp", "transformers", "custom"]
NS = "demo"
BASE = {
    "apiVersion": "modelferry.io/v1alpha1",
    "kind": "BaseModel",
    "metadata": {"name": "llama", "namespace": NS},
    "spec": {"storage": {"storageUri": "hf://meta-llama/Llama-3.2-1B@4e20de3"}},
    "status": {"nodesReady": ["node-a"]},
}
CTX = ServingContext(
    image="quay.io/modelferry/modelferry:1.0",
    serve_image="quay.io/modelferry/modelferry-train:1.0",
    base_models={"llama": BASE},
    cluster_base_models={"shared": {"metadata": {"name": "shared"}, "spec": {"storage": {"path": "shared/x"}}}},
    model_syncs={"tiny": "s3://models/tiny"},
    training_outputs={"lora": "s3://runs/lora-1/"},
)


def schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "manifests" / "crds" / "modelserver.yaml").read_text())
    [version] = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def server(engine: str, model: dict[str, Any], adapter: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    eng: dict[str, Any] = {"type": engine}
    if engine == "custom":
        eng.update(image="quay.io/acme/engine:1", command=["serve"], port=9000, healthPath="/ready")
    body: dict[str, Any] = {"model": model, "engine": eng, **spec}
    if adapter:
        body["adapter"] = adapter
    return {
        "apiVersion": "modelferry.io/v1alpha1",
        "kind": "ModelServer",
        "metadata": {"name": "chat", "namespace": NS, "uid": "u-1", "generation": 1},
        "spec": body,
    }


def pod_of(result: Any) -> dict[str, Any]:
    assert result.problem is None, result.problem
    return dict(result.objects[0]["spec"]["template"]["spec"])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("where", ["node", "bucket", "adapter"])
def test_every_preset_renders_valid_objects(engine: str, where: str) -> None:
    model = {"baseModel": "llama"} if where == "node" else {"uri": "s3://models/llama", "secretRef": "creds"}
    adapter = {"trainingRun": "lora"} if where == "adapter" else None
    result = render(server(engine, model, adapter), CTX)
    deployment, service = result.objects
    for obj in result.objects:
        kubernetes_validate.validate(obj, "1.33.0", strict=True)
    pod = deployment["spec"]["template"]["spec"]
    engine_c = pod["containers"][0]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["automountServiceAccountToken"] is False
    assert engine_c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert engine_c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    health = engine_c["readinessProbe"]["httpGet"]["path"]
    assert engine_c["livenessProbe"]["httpGet"]["path"] == engine_c["startupProbe"]["httpGet"]["path"] == health
    assert engine_c["startupProbe"]["failureThreshold"] * engine_c["startupProbe"]["periodSeconds"] >= 1800
    assert service["spec"]["ports"][0]["port"] == engine_c["ports"][0]["containerPort"] == result.port
    mounts = {m["mountPath"]: m for m in engine_c["volumeMounts"]}
    assert mounts[MODEL_PATH]["readOnly"] is True
    init = {c["name"]: c for c in pod.get("initContainers", [])}
    if where == "node":
        [volume] = [v for v in pod["volumes"] if v["name"] == "model"]
        assert volume["hostPath"] == {"path": "/mnt/models/demo/llama", "type": "Directory"}
        term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert term == [
            {
                "matchExpressions": [
                    {"key": "models.modelferry.io/demo.basemodel.llama", "operator": "In", "values": ["Ready"]}
                ]
            }
        ]
        assert "fetch-model" not in init and result.source.revision == "4e20de3"
    else:
        assert init["fetch-model"]["command"] == ["modelferry", "sync", "s3://models/llama", MODEL_PATH]
        refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in init["fetch-model"]["env"] if "valueFrom" in e}
        assert refs == {"creds"}
        assert "affinity" not in pod
    if where == "adapter":
        assert init["fetch-adapter"]["command"][2] == "s3://runs/lora-1/adapter"
        assert mounts[ADAPTER_PATH]["readOnly"] is True
        text = " ".join(engine_c.get("args", [])) + " " + str(engine_c.get("env"))
        if engine != "custom":
            assert "lora" in text
        assert {
            "vllm": "--enable-lora",
            "tgi": "LORA_ADAPTERS",
            "llama-cpp": "--lora",
            "transformers": "--adapter",
        }.get(engine, "ADAPTER_PATH") in text


def test_adapter_flags_per_engine() -> None:
    adapter = {"trainingRun": "lora", "name": "bot"}
    args = {e: pod_of(render(server(e, {"baseModel": "llama"}, adapter), CTX))["containers"][0] for e in ENGINES}
    assert args["vllm"]["args"][-3:] == ["--enable-lora", "--lora-modules", f"bot={ADAPTER_PATH}"]
    assert {"name": "LORA_ADAPTERS", "value": f"bot={ADAPTER_PATH}"} in args["tgi"]["env"]
    assert args["llama-cpp"]["args"][-2:] == ["--lora", f"{ADAPTER_PATH}/adapter.gguf"]
    assert args["transformers"]["args"][-4:] == ["--adapter", ADAPTER_PATH, "--adapter-name", "bot"]
    assert {"name": "ADAPTER_NAME", "value": "bot"} in args["custom"]["env"]


def test_tensor_parallel_follows_the_gpus_and_the_gpu_image_is_chosen() -> None:
    gpus = {"limits": {"nvidia.com/gpu": 4, "memory": "64Gi"}}
    vllm = pod_of(render(server("vllm", {"baseModel": "llama"}, resources=gpus), CTX))["containers"][0]
    assert vllm["args"][vllm["args"].index("--tensor-parallel-size") + 1] == "4"
    tgi = pod_of(render(server("tgi", {"baseModel": "llama"}, resources=gpus), CTX))["containers"][0]
    assert tgi["args"][tgi["args"].index("--num-shard") + 1] == "4"
    llama = pod_of(render(server("llama-cpp", {"baseModel": "llama"}, resources=gpus), CTX))["containers"][0]
    assert "server-cuda" in llama["image"] and "--n-gpu-layers" in llama["args"]


def test_user_strings_cannot_expand_variables_or_reach_a_shell() -> None:
    ms = server("vllm", {"baseModel": "llama", "servedName": "m$(HOME)"})
    ms["spec"]["engine"].update(args=["--x=$(SECRET)", "$$"], env=[{"name": "A", "value": "$(POD_IP)"}])
    container = pod_of(render(ms, CTX))["containers"][0]
    assert "m$$(HOME)" in container["args"]
    assert container["args"][-2:] == ["--x=$$(SECRET)", "$$$$"]
    assert {"name": "A", "value": "$$(POD_IP)"} in container["env"]
    assert container["command"] == ["vllm", "serve"]  # argv, no shell
    uri = render(server("tgi", {"uri": "s3://bucket/$(X)"}), CTX)
    assert pod_of(uri)["initContainers"][0]["command"][2] == "s3://bucket/$$(X)"
    assert literal("a$b") == "a$$b"


def test_custom_engine_uses_its_image_command_port_and_health_path() -> None:
    container = pod_of(render(server("custom", {"uri": "s3://models/x"}), CTX))["containers"][0]
    assert container["image"] == "quay.io/acme/engine:1" and container["command"] == ["serve"]
    assert container["ports"][0]["containerPort"] == 9000
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_transformers_runs_modelferry_serve_without_a_fixed_uid() -> None:
    pod = pod_of(render(server("transformers", {"modelSync": "tiny"}), CTX))
    container = pod["containers"][0]
    assert container["image"] == CTX.serve_image and container["command"] == ["modelferry"]
    assert pod["initContainers"][0]["image"] == CTX.image
    assert container["args"][:2] == ["serve", MODEL_PATH] and "runAsUser" not in pod["securityContext"]
    vllm = pod_of(render(server("vllm", {"modelSync": "tiny"}), CTX))
    assert vllm["securityContext"]["runAsUser"] == 1000  # the vLLM image runs as root by default


def test_pvc_uri_is_mounted_read_only_without_an_init_container() -> None:
    pod = pod_of(render(server("vllm", {"uri": "pvc://models-pvc/llama/8b"}), CTX))
    assert "initContainers" not in pod
    [volume] = [v for v in pod["volumes"] if v["name"] == "model"]
    assert volume["persistentVolumeClaim"] == {"claimName": "models-pvc", "readOnly": True}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == MODEL_PATH)
    assert mount["subPath"] == "llama/8b"


def test_a_changed_input_changes_the_pod_template_hash_but_not_the_name() -> None:
    one = render(server("vllm", {"baseModel": "llama"}), CTX).objects[0]
    two = render(server("vllm", {"baseModel": "llama"}), CTX).objects[0]
    assert one == two
    ms = server("vllm", {"baseModel": "llama"})
    ms["spec"]["engine"]["image"] = "docker.io/vllm/vllm-openai:v0.12.0"
    three = render(ms, CTX).objects[0]
    key = "modelferry.io/inputs-hash"
    assert three["metadata"]["name"] == one["metadata"]["name"]
    assert (
        three["spec"]["template"]["metadata"]["annotations"][key]
        != one["spec"]["template"]["metadata"]["annotations"][key]
    )


@pytest.mark.parametrize(
    ("model", "adapter", "reason", "waiting"),
    [
        ({"baseModel": "absent"}, None, "BaseModelNotFound", True),
        ({"clusterBaseModel": "absent"}, None, "ClusterBaseModelNotFound", True),
        ({"modelSync": "running"}, None, "ModelSyncNotReady", True),
        ({"uri": "s3://models/x"}, {"trainingRun": "running"}, "AdapterNotReady", True),
        ({"uri": "/local/dir"}, None, "InvalidURI", False),
        ({"uri": "ftp://x"}, None, "InvalidURI", False),
        ({"uri": "pvc://other:claim/x"}, None, "InvalidURI", False),
        ({"uri": "s3://models/x"}, {"uri": "pvc://claim/a"}, "InvalidURI", False),
        (
            {"uri": "s3://models/x", "servedName": "same"},
            {"uri": "s3://adapters/b", "name": "same"},
            "NameClash",
            False,
        ),
        ({"uri": "s3://models/x", "file": "../../etc/passwd"}, None, "InvalidFile", False),
    ],
)
def test_problems_name_the_reason(
    model: dict[str, Any], adapter: dict[str, Any] | None, reason: str, waiting: bool
) -> None:
    result = render(server("llama-cpp", model, adapter), CTX)
    assert result.problem is not None and result.problem.reason == reason
    assert result.problem.waiting is waiting and not result.objects


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("env", [{"name": "A", "value": 5}], "InvalidEnv"),
        ("env", [{"value": "x"}], "InvalidEnv"),
        ("env", [{"name": "A", "valueFrom": {"secretKeyRef": {}, "fieldRef": {}}}], "InvalidEnv"),
        ("env", [{"name": "A", "command": "x"}], "InvalidEnv"),
        ("resources", {"limits": {"memory": "lots"}}, "InvalidResources"),
        ("resources", {"maximum": {}}, "InvalidResources"),
    ],
)
def test_what_the_api_server_would_reject_is_a_spec_problem(field: str, value: Any, reason: str) -> None:
    ms = server("vllm", {"baseModel": "llama"})
    if field == "env":
        ms["spec"]["engine"]["env"] = value
    else:
        ms["spec"][field] = value
    result = render(ms, CTX)
    assert result.problem is not None and result.problem.reason == reason and not result.problem.waiting
    ok = server(
        "vllm", {"baseModel": "llama"}, resources={"limits": {"memory": "1.5Gi", "cpu": "500m", "nvidia.com/gpu": 1}}
    )
    ok["spec"]["engine"]["env"] = [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]
    assert render(ok, CTX).problem is None


def test_a_namespaced_base_model_cannot_point_into_another_namespace() -> None:
    other = copy.deepcopy(BASE)
    other["spec"]["storage"]["path"] = "victim/their-model"
    result = render(server("vllm", {"baseModel": "llama"}), ServingContext(base_models={"llama": other}))
    assert result.problem is not None and result.problem.reason == "ModelPathOutsideNamespace"
    outside = copy.deepcopy(BASE)
    outside["spec"]["storage"]["path"] = "/etc"
    result = render(server("vllm", {"baseModel": "llama"}), ServingContext(base_models={"llama": outside}))
    assert result.problem is not None and result.problem.reason == "ModelPathInvalid"
    cluster = render(server("vllm", {"clusterBaseModel": "shared"}), CTX)
    assert pod_of(cluster)["volumes"][1]["hostPath"]["path"] == "/mnt/models/shared/x"


def test_there_is_an_example_per_engine() -> None:
    engines = {yaml.safe_load(p.read_text())["spec"]["engine"]["type"] for p in EXAMPLES}
    assert engines == set(ENGINES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_renders(path: Path) -> None:
    ms = yaml.safe_load(path.read_text())
    jsonschema.validate(ms, schema())
    ctx = ServingContext(
        base_models={"qwen2-5-0-5b-gguf": {"metadata": {"name": "qwen2-5-0-5b-gguf"}, "spec": {"storage": {}}}},
        cluster_base_models={"llama-3-8b-instruct": {"metadata": {"name": "llama-3-8b-instruct"}, "spec": {}}},
        model_syncs={"tiny-llama": "s3://demo-models/models/tiny-llama"},
        training_outputs={"qwen-lora": "s3://out/qwen", "tiny-llama-lora": "s3://out/tiny"},
    )
    ms["metadata"]["uid"] = "u"
    result = render(ms, ctx)
    assert result.problem is None
    for obj in result.objects:
        kubernetes_validate.validate(obj, "1.33.0", strict=True)


def test_schema_rejects_a_bad_engine_and_a_bad_port() -> None:
    ms = yaml.safe_load(EXAMPLES[0].read_text())
    bad = copy.deepcopy(ms)
    bad["spec"]["engine"]["type"] = "ollama"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema())
    bad = copy.deepcopy(ms)
    bad["spec"]["engine"]["port"] = 70000
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema())


def test_crd_has_the_cel_rules_and_printer_columns() -> None:
    crd = yaml.safe_load((ROOT / "manifests" / "crds" / "modelserver.yaml").read_text())
    [version] = crd["spec"]["versions"]
    model = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["model"]
    [rule] = model["x-kubernetes-validations"]
    assert "has(self.baseModel), has(self.clusterBaseModel), has(self.modelSync), has(self.uri)" in rule["rule"]
    assert ".size() == 1" in rule["rule"]
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Engine", "Phase", "Ready", "URL"} <= columns


def test_rbac_covers_serving() -> None:
    granted = controller_grants()
    watched = {"get", "list", "watch"}
    needed = {
        ("modelferry.io", "modelservers"): watched,
        ("modelferry.io", "modelservers/status"): {"patch"},
        ("apps", "deployments"): watched | {"create", "update", "delete"},
        ("", "services"): watched | {"create", "update", "delete"},
        ("", "pods"): watched,
        ("modelferry.io", "basemodels"): watched,
        ("modelferry.io", "clusterbasemodels"): watched,
        ("modelferry.io", "modelsyncs"): watched,
        ("modelferry.io", "trainingruns"): watched,
    }
    for key, verbs in needed.items():
        assert verbs <= granted.get(key, set()), key


def test_every_alert_names_a_runbook_section_that_exists() -> None:
    rules = yaml.safe_load((ROOT / "kustomize" / "components" / "monitoring" / "prometheusrule.yaml").read_text())
    alerts = [r for g in rules["spec"]["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} >= {
        "ModelferryEngineDown",
        "ModelferryEngineRestarting",
        "ModelferryModelDownloadFailing",
        "ModelferrySyncJobFailed",
        "ModelferryModelsDiskHigh",
    }
    doc = (ROOT / "docs" / "serving.md").read_text()
    anchors = {
        "-".join("".join(ch for ch in line.lstrip("#").strip().lower() if ch.isalnum() or ch in " -").split())
        for line in doc.splitlines()
        if line.startswith("#")
    }
    for alert in alerts:
        page, _, anchor = alert["annotations"]["runbook_url"].partition("#")
        assert page == "docs/serving.md" and anchor in anchors, alert["alert"]


def test_dashboard_is_valid_json_with_panels_for_each_component() -> None:
    import json

    dash = json.loads((ROOT / "kustomize" / "components" / "monitoring" / "modelferry-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for prefix in ("modelferry_serve_", "modelferry_agent_", "modelferry_controller_", "vllm:"):
        assert prefix in exprs


def test_engine_pods_carry_their_metrics_path_for_the_pod_monitor() -> None:
    dep = render(server("custom", {"uri": "s3://models/x"}), CTX).objects[0]
    assert dep["spec"]["template"]["metadata"]["annotations"]["modelferry.io/metrics-path"] == "/metrics"
    monitor = next(
        d
        for d in yaml.safe_load_all((ROOT / "kustomize" / "components" / "monitoring" / "podmonitor.yaml").read_text())
        if d["metadata"]["name"] == "modelferry-engines"
    )
    relabel = monitor["spec"]["podMetricsEndpoints"][0]["relabelings"][0]
    assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_annotation_modelferry_io_metrics_path"]
    assert set(monitor["spec"]["selector"]["matchLabels"].items()) <= set(
        dep["spec"]["template"]["metadata"]["labels"].items()
    )


def test_openshift_leaves_the_engine_uid_to_the_platform() -> None:
    import shutil
    import subprocess

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: cannot render kustomize overlays")
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "kustomize" / "overlays" / "openshift")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    controller = next(
        d
        for d in yaml.safe_load_all(out)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "modelferry-controller"
    )
    env = {e["name"]: e.get("value") for e in controller["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELFERRY_CONTROLLER__SERVING__RUN_AS_USER"] == "0"
    pod = pod_of(
        render(server("vllm", {"modelSync": "tiny"}), ServingContext(model_syncs=CTX.model_syncs, run_as_user=None))
    )
    assert "runAsUser" not in pod["securityContext"] and pod["securityContext"]["runAsNonRoot"] is True
